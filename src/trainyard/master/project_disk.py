"""Each project's disk use: the bytes of its checkpoints and logs, measured from its folder.

A project's experiments live under <home>/projects/<project>/ (see
`MasterService.create_experiment`), so its use is that folder's size. Walking a folder of many
checkpoints takes a while, so a measurement is kept for `refresh_s` seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (0 when it does not exist); links are not
    followed, files that vanish while walking are skipped."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += stat.st_size
    return total


class ProjectDisk:
    """Cached disk use per project; safe to call from the API's threads and the loop."""

    def __init__(
        self, home: Path, *, refresh_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._home = home
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, int]] = {}

    def folder(self, project: str) -> Path:
        return self._home / "projects" / project

    def bytes_used(self, project: str, *, fresh: bool = False) -> int:
        """The project's bytes, measured at most `refresh_s` ago (now with `fresh`)."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(project)
        if cached is not None and not fresh and now - cached[0] < self._refresh_s:
            return cached[1]
        used = folder_bytes(self.folder(project))
        with self._lock:
            self._cache[project] = (now, used)
        return used


def format_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
