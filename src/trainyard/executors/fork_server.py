"""The local executor's side of the worker fork server (trainyard/worker/forkserver.py).

The server is one `python -m trainyard.worker.forkserver` process that has imported torch and
the worker; each one-slot trial's worker is a fork of it, so it starts trained-ready instead of
spending seconds on imports. This module starts the server, sends it `ForkRequest`s, and
collects its `ForkStarted` / `ForkExited` replies on a reader thread, so `ForkedWorker.poll`
answers like `Popen.poll`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from trainyard.errors import ExecutorError
from trainyard.executors.base import INFRASTRUCTURE_EXIT
from trainyard.protocol import ForkExited, ForkReply, ForkRequest, ForkStarted

logger = logging.getLogger(__name__)

FORK_SERVER_MODULE = "trainyard.worker.forkserver"
START_TIMEOUT_S = 300.0
"""How long a fork may take to be confirmed: the first one waits for the server's imports,
which take minutes only on a machine that is swapping."""
CLOSE_TIMEOUT_S = 1.0
"""How long a closed server gets to exit on its own before it is killed: either way its
workers, in their own sessions, carry on; only the server's imports may still be running."""
WORKER_LOST_EXIT = INFRASTRUCTURE_EXIT
"""The exit code of a forked worker whose status died with the fork server."""

_REPLIES: TypeAdapter[ForkStarted | ForkExited] = TypeAdapter(ForkReply)


@dataclass
class ForkedWorker:
    """A worker forked by the server, polled like a `subprocess.Popen`."""

    pid: int
    server: ForkServer
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode


class ForkServer:
    """One warm worker parent; starts importing at once, in the background."""

    def __init__(self, *, env: dict[str, str]) -> None:
        """`env` is added to this process's environment for the server: what libraries read
        once at import (OpenMP's wait policy) must be set there, not in each worker."""
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the server's life)
        self._process = subprocess.Popen(
            [sys.executable, "-m", FORK_SERVER_MODULE],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            start_new_session=True,  # Ctrl-C in the terminal is for the CLI alone
        )
        self._started: queue.Queue[ForkStarted | None] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._lock = threading.Lock()
        self._alive = True
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The server's process id (each forked worker's parent)."""
        return self._process.pid

    def start(self, request: ForkRequest) -> ForkedWorker:
        """Fork the trial's worker; raises ExecutorError if the server cannot."""
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(request.model_dump_json().encode() + b"\n")
            self._process.stdin.flush()
            started = self._started.get(timeout=START_TIMEOUT_S)
        except (OSError, queue.Empty):
            started = None
        if started is None or started.trial_id != request.trial_id:
            raise ExecutorError(f"the worker fork server failed: {self._failure()}")
        return ForkedWorker(pid=started.pid, server=self)

    def exit_code(self, pid: int) -> int | None:
        """A forked worker's exit status once the server reaped it, else None; if the server
        died first, WORKER_LOST_EXIT once the worker is gone too."""
        with self._lock:
            if pid in self._exits:
                return self._exits.pop(pid)
            if self._alive:
                return None
        return None if is_running(pid) else WORKER_LOST_EXIT

    def close(self) -> None:
        """Let the server exit (workers still running carry on) and wait for it."""
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=CLOSE_TIMEOUT_S)
        self._errors.close()

    def _read_replies(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                reply = _REPLIES.validate_json(line)
            except ValidationError:
                logger.warning("worker fork server: unreadable reply %r", line[:200])
                continue
            if isinstance(reply, ForkStarted):
                self._started.put(reply)
            else:
                with self._lock:
                    self._exits[reply.pid] = reply.code
        with self._lock:
            self._alive = False
        self._started.put(None)

    def _failure(self) -> str:
        """Why the server stopped answering: its exit status and the end of its stderr."""
        code = self._process.poll()
        self._errors.seek(0)
        tail = self._errors.read().decode(errors="replace").strip().splitlines()[-5:]
        status = "it did not answer" if code is None else f"it exited with code {code}"
        return status + (": " + " | ".join(tail) if tail else "")


def is_running(pid: int) -> bool:
    """Whether `pid` runs (a zombie that no one reaps does not)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
