"""Durable writes and verified reads of the files in a checkpoint folder."""

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from trainyard.errors import CheckpointError

# What torch.load(weights_only=True) reads back; anything else is refused before saving.
_LEAVES = (torch.Tensor, torch.nn.Parameter, torch.dtype, torch.device)
_LEAVES += (bool, int, float, complex, str, bytes, type(None))
_SEQUENCES = (list, tuple, torch.Size)
_MAPPINGS = (dict, OrderedDict)


def check_loadable(obj: Any, where: str) -> None:
    """Refuse, before anything is written, state that weights_only loading would reject:
    finding out at resume time would make every checkpoint of the run useless."""
    kind = type(obj)
    if kind in _LEAVES:
        return
    if kind in _SEQUENCES:
        for index, item in enumerate(obj):
            check_loadable(item, f"{where}[{index}]")
        return
    if kind in _MAPPINGS:
        for key, value in obj.items():
            check_loadable(key, f"a key of {where}")
            check_loadable(value, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"cannot save checkpoint: {where} is a {kind.__module__}.{kind.__qualname__}, which "
        "torch.load(weights_only=True) refuses; store only tensors, numbers, strings, "
        "lists, tuples and dicts (e.g. float(x), x.tolist() or torch.as_tensor(x))"
    )


def verify_file(path: Path, expected_bytes: int, expected_sha256: str) -> None:
    """The size first (cheap, catches truncation), then the checksum (catches damage)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    if size != expected_bytes:
        how = "truncated" if size < expected_bytes else "longer than written"
        raise CheckpointError(f"{path}: size {size} bytes, expected {expected_bytes} ({how})")
    digest = sha256(path)
    if digest != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {digest[:16]}..., expected {expected_sha256[:16]}... (corrupted)"
        )


def error_gist(exc: Exception) -> str:
    """The gist of a torch.load error: weights_only errors run to paragraphs that suggest
    loading unsafely, which is never the fix for a checkpoint trainyard wrote."""
    text = str(exc)
    _, marker, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (after if marker else text).splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(exc).__name__


def write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_state(path: Path, state: dict[str, Any]) -> tuple[int, str]:
    """torch.save the state durably; return its size and sha256, read back from the file."""
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size, sha256(path)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in a folder durable (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
