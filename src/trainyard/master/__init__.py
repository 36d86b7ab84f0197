"""The Master: experiment lifecycle, recovery, and the HTTP API workers talk to."""
