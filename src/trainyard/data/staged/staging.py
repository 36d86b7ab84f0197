"""Stage preprocessed, fixed-shape arrays once into memory-mappable shards, keyed by their inputs.

Preprocessing (feature building, standardisation, padding) costs far more than reading the
result, so it runs once per (input files, data config, format version) and every later epoch,
trial and rank reads the staged bytes, from the folder ``<cache_root>/<key>``.

The folder appears by one rename of a finished temporary folder, so a crash or a full disk
leaves nothing that could be mistaken for a staged dataset; the next call starts over. The
layout is described in ``staged.dataset``, the writing of chunks in ``staged.shards``.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from trainyard.data.staged.cache import hold_for_reading
from trainyard.data.staged.dataset import (
    MANIFEST_NAME,
    STAGING_FORMAT_VERSION,
    ArraySpec,
    StagedDataset,
)
from trainyard.data.staged.shards import OpenFile, ShardWriter, checked_chunk, open_new
from trainyard.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_JETS_PER_SHARD = 1 << 20
LOCK_POLL_S = 1.0
"""Seconds between tries for the lock of a key another process is staging, with on_progress."""
_KEY = re.compile(r"[0-9a-f]{8,64}")
_FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def staging_key(files: Sequence[Path], config_text: str) -> str:
    """A hash of the inputs (path, size, mtime), the data config and the staging format.

    Touching or rewriting a file, or changing one character of the config, gives a new key,
    so stale staged data is never reused. ``config_text`` is everything besides the files that
    decides the arrays (a data config file's text, producer settings).
    """
    described = []
    for file in files:
        path = Path(file).resolve()
        try:
            status = path.stat()
        except OSError as error:
            raise DataError(
                f"cannot stage {path}: {error.strerror}; check the path and that it is readable"
            ) from error
        described.append([str(path), status.st_size, status.st_mtime_ns])
    payload = {
        "format_version": STAGING_FORMAT_VERSION,
        "files": described,
        "config": config_text,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def find_staged(cache_root: Path, key: str) -> StagedDataset | None:
    """The staged dataset for ``key`` if a complete, valid one exists, else None.

    The dataset holds a reader's lease (`staged.cache`), so the cache's eviction leaves it
    alone while this process keeps it.
    """
    lease = hold_for_reading(cache_root, key)
    dataset = _open_valid(Path(cache_root) / key)
    if dataset is None:
        if lease is not None:
            lease.close()
        return None
    return dataclasses.replace(dataset, lease=lease)


def _open_valid(folder: Path) -> StagedDataset | None:
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        return StagedDataset.open(folder)
    except DataError as error:
        logger.warning("ignoring damaged staged data: %s", error)
        return None


def stage(
    chunks: Iterable[Mapping[str, np.ndarray]],
    cache_root: Path,
    *,
    key: str,
    extra_manifest: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    num_jets: int | None = None,
    jets_per_shard: int = DEFAULT_JETS_PER_SHARD,
    open_file: OpenFile | None = None,
    on_progress: Callable[[], None] | None = None,
) -> StagedDataset:
    """Write ``chunks`` (dicts of equal-length arrays) as ``cache_root/key``, or reuse it.

    When a valid folder for ``key`` exists, ``chunks`` is not even iterated. Otherwise the
    arrays go to a temporary folder that is renamed into place once complete and synced;
    one process at a time stages a key (an flock on ``cache_root/.<key>.lock``), the others
    wait and then reuse its result. ``extra_manifest`` (free-form JSON) may be a function,
    called after the last chunk, for what a producer learns on the way (e.g. computed
    standardisation). ``num_jets``, when known, lets a too-small disk fail before anything
    is written. ``on_progress`` (e.g. a heartbeat) is called after each chunk and about every
    ``LOCK_POLL_S`` seconds while another process stages the same key.
    """
    if not _KEY.fullmatch(key):
        raise DataError(f"staging key {key!r} is not 8-64 lowercase hex digits; use staging_key()")
    if jets_per_shard < 1:
        raise DataError(f"jets_per_shard must be at least 1, got {jets_per_shard}")
    if not callable(extra_manifest):
        extra_manifest = _as_json(extra_manifest or {}, "extra_manifest")
    cache_root = Path(cache_root)
    found = find_staged(cache_root, key)
    if found is not None:
        return found
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the staging cache folder {cache_root}: {error.strerror}; "
            "choose a writable cache root (--out, or TRAINYARD_HOME)"
        ) from error
    lease = hold_for_reading(cache_root, key)  # nothing evicts it between the rename and use
    with _exclusive_lock(cache_root / f".{key}.lock", on_progress) as locked:
        found = find_staged(cache_root, key)
        if found is not None:
            if lease is not None:
                lease.close()
            return found
        if locked:
            # Nobody else can be writing these while we hold the lock: crashed runs left them.
            for abandoned in cache_root.glob(f".tmp-{key}-*"):
                shutil.rmtree(abandoned, ignore_errors=True)
        temp = cache_root / f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"
        temp.mkdir()
        try:
            _write_staged(
                chunks, temp, key, extra_manifest, num_jets, jets_per_shard, open_file, on_progress
            )
            _replace_folder(temp, cache_root / key)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return dataclasses.replace(StagedDataset.open(cache_root / key), lease=lease)


def _write_staged(
    chunks: Iterable[Mapping[str, np.ndarray]],
    temp: Path,
    key: str,
    extra_manifest: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    num_jets: int | None,
    jets_per_shard: int,
    open_file: OpenFile | None,
    on_progress: Callable[[], None] | None,
) -> None:
    """Write every chunk into ``temp``, then the manifest; the folder is complete afterwards."""
    started = time.perf_counter()
    writer: ShardWriter | None = None
    try:
        for index, chunk in enumerate(chunks):
            arrays = checked_chunk(chunk, index, None if writer is None else writer.specs)
            if writer is None:
                specs = {name: ArraySpec(a.dtype, a.shape[1:]) for name, a in arrays.items()}
                writer = ShardWriter(temp, specs, jets_per_shard, open_file or open_new)
                if num_jets is not None:
                    _check_free_space(temp, writer.bytes_needed(num_jets))
            with _disk_errors(temp, writer, num_jets):
                writer.append(arrays)
            if on_progress is not None:
                on_progress()
        if writer is None or writer.num_jets == 0:
            raise DataError("there are no jets to stage; check that the input files hold jets")
        extra = extra_manifest() if callable(extra_manifest) else extra_manifest
        manifest = {
            "format": "trainyard-staged",
            "format_version": STAGING_FORMAT_VERSION,
            "key": key,
            "num_jets": writer.num_jets,
            "jets_per_shard": jets_per_shard,
            "shard_sizes": [],
            "arrays": {
                name: {"dtype": spec.dtype.str, "shape": list(spec.shape)}
                for name, spec in writer.specs.items()
            },
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "extra": _as_json(extra, "extra_manifest"),
        }
        with _disk_errors(temp, writer, num_jets):
            manifest["shard_sizes"] = writer.finish()
            with (temp / MANIFEST_NAME).open("w") as manifest_file:
                json.dump(manifest, manifest_file, indent=2)
                manifest_file.flush()
                os.fsync(manifest_file.fileno())
            _fsync_folder(temp)
    except BaseException:
        if writer is not None:
            writer.close_quietly()
        raise
    logger.info(
        "staged %d jets (%.1f MB) in %.1f s",
        writer.num_jets,
        writer.bytes_written / 1e6,
        time.perf_counter() - started,
    )


@contextmanager
def _disk_errors(temp: Path, writer: ShardWriter, num_jets: int | None) -> Iterator[None]:
    """Turn a full disk (or another write failure) into a DataError that says what to do."""
    try:
        yield
    except OSError as error:
        writer.close_quietly()
        cache_root = temp.parent
        if error.errno in _FULL_DISK_ERRNOS:
            needed = (
                f"{_size(writer.bytes_needed(num_jets))} in all"
                if num_jets is not None
                else "more (the total was not known in advance)"
            )
            raise DataError(
                f"the disk holding {cache_root} is full ({error.strerror}): staging stopped "
                f"after {_size(writer.bytes_written)} of row data and needed {needed}; "
                f"{_size(_free_bytes(cache_root))} is free now. Nothing was kept. Free space "
                "there, or stage to a larger disk (--out DIR or TRAINYARD_HOME)"
            ) from error
        raise DataError(
            f"writing staged data under {cache_root} failed: {error}; nothing was kept. "
            "Check that the folder is writable, or stage to another one (--out DIR)"
        ) from error


def _check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start when the disk cannot hold the staged dataset."""
    free = _free_bytes(folder)
    if free < needed:
        raise DataError(
            f"staging needs {_size(needed)} but only {_size(free)} is free on the disk holding "
            f"{folder.parent}; free {_size(needed - free)} there, or stage to a larger disk "
            "(--out DIR or TRAINYARD_HOME)"
        )


def _replace_folder(temp: Path, final: Path) -> None:
    """Rename ``temp`` to ``final``; a damaged ``final`` goes first, a valid one stays.

    ``final`` can only be valid here without a lock, when another stager finished first.
    """
    if final.exists():
        if _open_valid(final) is not None:
            return
        trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(temp, final)
    except OSError:
        if _open_valid(final) is None:
            raise
    _fsync_folder(final.parent)


@contextmanager
def _exclusive_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an flock on ``path`` (released by the kernel if the process dies).

    With ``on_wait`` the lock is polled and ``on_wait`` called between tries, so a waiter can
    show it is alive; without, the call blocks. Yields False, unlocked, on a filesystem without
    flock: staging still works, but concurrent stagers of one key each do the work.
    """
    with path.open("a") as lock_file:
        try:
            if on_wait is None:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            else:
                while not _try_lock(lock_file):
                    on_wait()
                    time.sleep(LOCK_POLL_S)
        except OSError as error:
            logger.warning(
                "cannot lock %s (%s); staging without a lock, so concurrent stagers of this "
                "key each do the work",
                path,
                error.strerror,
            )
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _try_lock(lock_file: Any) -> bool:
    """Take the flock if nobody holds it; False when another process does."""
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _fsync_folder(folder: Path) -> None:
    """Make renames and new entries in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _size(num_bytes: int) -> str:
    """A byte count in the largest binary unit that keeps it at least 1."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _as_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Round-trip through JSON so the manifest holds exactly what was given, or say why not."""
    try:
        return json.loads(json.dumps(dict(value), sort_keys=True))
    except (TypeError, ValueError) as error:
        raise DataError(
            f"{what} must be JSON-serialisable (str, numbers, lists, dicts): {error}"
        ) from error
