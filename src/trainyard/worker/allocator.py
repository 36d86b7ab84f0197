"""Keep freed memory in the worker's heap, so training steps stop re-faulting their tensors.

Why: with glibc's default malloc settings a training step's large tensors (ParticleNet's edge
features are tens of MB at batch 256) are either memory-mapped on allocation and unmapped on
free (above the mmap threshold, which adapts only up to 32 MB) or returned to the kernel when
the heap top is trimmed (above the 128 KiB trim threshold). Either way the next step faults
every page of them in again, zero-filled by the kernel: measured on a ParticleNet-Lite trial
(batch 256, 64 particles, 2 threads) that was about 67,000 minor page faults and a fifth of
the CPU time in the kernel per step (benchmarks/kernel_time.py).

Raising both thresholds makes a step's tensors come from the heap and stay there once freed,
so the next step reuses the same, already mapped pages. The worker's memory then stays at
its peak step's size instead of breathing with every step, which is what a training process
wants. Both thresholds are set explicitly (setting only the trim threshold would pin the mmap
threshold at 128 KiB and make it worse). glibc's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
or GLIBC_TUNABLES in the environment win: then the worker leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt(3) parameter numbers, from glibc's malloc.h."""
KEEP_FREED_BYTES = 1 << 30
"""Allocations below this come from the heap, and up to this much free heap top is kept."""
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc malloc's mmap and trim thresholds to KEEP_FREED_BYTES; returns whether it did.

    Does nothing (and says why in a debug line) where malloc is not glibc's, or where the
    user tuned malloc through the environment. Call it first thing in the process: it only
    changes how later allocations are served.
    """
    chosen = [name for name in USER_SETTINGS if name in os.environ]
    if chosen:
        logger.info("malloc: left as %s in the environment sets it", ", ".join(chosen))
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        logger.debug("malloc: not glibc's (no mallopt), left as it is")
        return False
    applied = mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES) == 1
    applied = applied and mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1
    if applied:
        logger.info(
            "malloc: freed memory stays in the heap (mmap and trim thresholds %d MiB)",
            KEEP_FREED_BYTES >> 20,
        )
    else:
        logger.warning("malloc: glibc refused the mmap/trim thresholds; left as it is")
    return applied


def _glibc_mallopt() -> ctypes._CFuncPtr | None:
    """glibc's mallopt, or None on another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl's mallopt is a no-op
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
