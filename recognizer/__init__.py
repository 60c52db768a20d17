"""Recognition: model catalogue, model cache and inference backends (faces and plates)."""
