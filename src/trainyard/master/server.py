"""Serve the Master API from a background thread: of the CLI process (embedded mode), or of
`trainyard server`, whose main thread keeps the signals and the scheduling loop."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from trainyard.errors import TrainyardError

KEEP_ALIVE_S = 75
"""How long an idle client connection stays open (nginx's default). Longer than any client's
own keep-alive (httpx: 5 s), so a client always drops an idle connection first: with
uvicorn's default of 5 s, a request sent on a connection the server was closing at that
moment came back "Server disconnected" (seen with 30 users submitting at once)."""


class EmbeddedServer:
    """uvicorn on a free port (127.0.0.1 unless told otherwise); a fresh token per run."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        advertised_host: str | None = None,
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """`port` 0 picks a free one; `tls`: (certificate, key) files to serve HTTPS with.

        Raises:
            TrainyardError: the address is taken or cannot be bound.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host.strip("[]"), port))
        except OSError as err:
            self._socket.close()
            raise TrainyardError(
                f"cannot listen on {host}:{port}: {err.strerror}; choose another `host` or "
                "`port`, or stop what uses it"
            ) from None
        self.port: int = self._socket.getsockname()[1]
        self._advertised_host = advertised_host or host
        self._scheme = "https" if tls else "http"
        certfile, keyfile = tls or (None, None)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._advertised_host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving and wait until uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TrainyardError(f"the Master could not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()


def new_token() -> str:
    """A per-run secret so other local users cannot report into our trials."""
    return secrets.token_urlsafe(32)
