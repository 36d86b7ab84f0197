"""A rank's life tied to torchrun's agent; torch-free, so `trainyard.core` uses it too."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

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
