"""The staging cache as a shared, bounded resource: who reads what, and what may go.

Staged datasets are written once and read by every later trial, so the cache only grows. A
facility gives it a size limit (`TRAINYARD_STAGING_CACHE_MAX_GB`); the least recently used
datasets are evicted past it, never one a running trial reads.

"In use" is a shared flock on ``<cache_root>/.<key>.use``, taken by every reader before it
looks at the folder (`find_staged` takes it and the returned dataset holds it until the
process ends or drops the dataset). The kernel releases it when a reader dies, so a crashed
trial never pins data. The evictor takes the same lock exclusively and without waiting: if it
gets it nobody reads the folder, which it renames away under the lock and deletes after, so a
reader arriving later finds no folder and stages again. Last use is the lock file's mtime,
touched at each open (atime is unreliable under relatime/noatime).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

_KEY_FOLDER = re.compile(r"[0-9a-f]{8,64}")


def use_lock_path(cache_root: Path, key: str) -> Path:
    return Path(cache_root) / f".{key}.use"


def hold_for_reading(cache_root: Path, key: str) -> IO[str] | None:
    """A shared lease on `key`, kept as long as the returned file stays open; None on a
    filesystem without flock (then nothing is evicted safely, see `evict`)."""
    path = use_lock_path(cache_root, key)
    try:
        lease = path.open("a")
    except OSError:
        return None  # a read-only cache: nobody can evict from it either
    try:
        fcntl.flock(lease, fcntl.LOCK_SH)
        os.utime(path)
    except OSError:
        lease.close()
        return None
    return lease


@dataclass(frozen=True)
class CacheEntry:
    """One staged dataset in the cache."""

    key: str
    path: Path
    num_bytes: int
    last_used: datetime
    in_use: bool


def cache_entries(cache_root: Path) -> list[CacheEntry]:
    """Every complete staged dataset under `cache_root`, least recently used first."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    entries = []
    for folder in root.iterdir():
        if not _KEY_FOLDER.fullmatch(folder.name) or not folder.is_dir():
            continue
        lock = use_lock_path(root, folder.name)
        used = lock.stat().st_mtime if lock.exists() else folder.stat().st_mtime
        entries.append(
            CacheEntry(
                key=folder.name,
                path=folder,
                num_bytes=_folder_bytes(folder),
                last_used=datetime.fromtimestamp(used, UTC),
                in_use=_in_use(root, folder.name),
            )
        )
    return sorted(entries, key=lambda entry: (entry.last_used, entry.key))


def evict(
    cache_root: Path, *, max_bytes: int, keep: frozenset[str] = frozenset()
) -> list[CacheEntry]:
    """Delete least recently used datasets until the cache holds at most `max_bytes`.

    Datasets being read and those in `keep` stay, even if the cache then stays above the
    limit (a warning says so). Returns what was evicted.
    """
    entries = cache_entries(cache_root)
    total = sum(entry.num_bytes for entry in entries)
    evicted: list[CacheEntry] = []
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.key in keep or not _remove_unused(Path(cache_root), entry):
            continue
        total -= entry.num_bytes
        evicted.append(entry)
        logger.info(
            "evicted staged data %s (%.1f MB, last used %s) to keep the cache under %.1f GB",
            entry.key,
            entry.num_bytes / 1e6,
            entry.last_used.isoformat(timespec="seconds"),
            max_bytes / 1e9,
        )
    if total > max_bytes:
        logger.warning(
            "the staging cache holds %.1f GB, above its limit of %.1f GB: the rest is in use",
            total / 1e9,
            max_bytes / 1e9,
        )
    return evicted


def _remove_unused(root: Path, entry: CacheEntry) -> bool:
    """Rename the folder away under an exclusive lease, then delete it; False if in use."""
    with use_lock_path(root, entry.key).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return False  # no flock here: readers cannot be seen, so nothing is evicted
        trash = root / f".trash-{entry.key}-{os.getpid()}"
        try:
            os.rename(entry.path, trash)
        except FileNotFoundError:
            return False  # another evictor was first
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _in_use(root: Path, key: str) -> bool:
    path = use_lock_path(root, key)
    if not path.exists():
        return False
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
