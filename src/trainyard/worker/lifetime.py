"""A rank's life: tied to torchrun's agent, and ended without the interpreter's teardown.

Torch-free, so `trainyard.core` uses it too.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from typing import NoReturn

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_agent() -> None:
    """Ask Linux to SIGKILL this rank when torchrun's agent (our parent) dies.

    torchrun starts each rank in its own session, so an executor that kills the agent's
    process group (a hung trial, a killed Master's leftovers) would otherwise leave the ranks
    running and holding their devices.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
    elif os.getppid() != parent:  # the agent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def exit_now(code: int) -> NoReturn:
    """End the process with `code`, skipping the interpreter's teardown.

    Tearing down an interpreter that imported torch and torch._dynamo (every module and object
    freed one by one) takes 1-3 s on a busy 2-core machine: time in which the trial's slot, or
    its SLURM job, stays held after its outcome was reported (benchmarks/startup.py,
    "turnover"). What a normal exit does that matters still happens first, in its order:
    other non-daemon threads are joined, exit handlers run (logging's flush among them), and
    stdout and stderr are flushed. The fork server's children end with os._exit too.
    """
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what Py_Finalize runs first; the only step kept
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a dead pipe: nothing to save
            stream.flush()
    os._exit(code)
