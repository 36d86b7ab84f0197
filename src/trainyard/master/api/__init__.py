"""The Master's HTTP API (FastAPI): the only way workers talk to the Master."""
