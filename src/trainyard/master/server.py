"""Serve the Master API from a background thread of the CLI process (embedded mode)."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from trainyard.errors import TrainyardError


class EmbeddedServer:
    """uvicorn on a free port (127.0.0.1 unless told otherwise); a fresh token per run."""

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", advertised_host: str | None = None
    ) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        self._advertised_host = advertised_host or host
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self._advertised_host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving and wait until uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TrainyardError(f"the embedded Master could not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()


def new_token() -> str:
    """A per-run secret so other local users cannot report into our trials."""
    return secrets.token_urlsafe(32)
