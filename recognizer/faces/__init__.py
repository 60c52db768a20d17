"""Face detection, alignment, quality, embedding and liveness (pure pixels-to-facts)."""
