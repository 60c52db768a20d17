"""Running smartgate: the gRPC servers, decisions, the CLI (and later Ray workers and Redis)."""
