"""Atomic, verified checkpoints that let a killed trial resume bit-exactly.

A kill can land at any moment, including mid-save, so a checkpoint is written into a hidden
temporary folder and renamed into place only once every file is on disk: a folder named
`step-NNNNNNNN` is always complete. Its meta.json records the size and sha256 of state.pt, so a
file damaged later (full disk, partial copy, bit rot) is refused on load and the previous
checkpoint is used instead of resuming from garbage. State is loaded with `weights_only=True`,
so a checkpoint can never run code when it is read.
"""

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from trainyard import __version__
from trainyard.errors import CheckpointError, NotFoundError

logger = logging.getLogger(__name__)

# Keys of the state dict a worker saves; one place so saver and loader cannot drift apart.
MODEL = "model"
OPTIMIZER = "optimizer"
LR_SCHEDULER = "lr_scheduler"
DATALOADER = "dataloader"
TRAIN_STATE = "train_state"
RNG = "rng"

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"

_CHECKPOINT = re.compile(r"step-(\d{8,})")
_LEFTOVER = re.compile(r"\.step-\d{8,}\.(?:tmp|old)-.+")

# What torch.load(weights_only=True) reads back; anything else is refused before saving.
_LEAVES = (torch.Tensor, torch.nn.Parameter, torch.dtype, torch.device)
_LEAVES += (bool, int, float, complex, str, bytes, type(None))
_SEQUENCES = (list, tuple, torch.Size)
_MAPPINGS = (dict, OrderedDict)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A verified checkpoint, plus why any newer ones were passed over (for the trial log)."""

    path: Path
    batches: int
    state: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


class CheckpointManager:
    """Saves, prunes and loads the checkpoints of one trial in one directory.

    Only one process may write a directory at a time: a save deletes the temporary folders that
    earlier, crashed saves left behind.
    """

    def __init__(self, directory: Path, *, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def save(self, batches: int, state: dict[str, Any], *, config: dict[str, Any]) -> Path:
        """Write a checkpoint for `batches` trained batches atomically; return its folder.

        Afterwards only the newest `keep` checkpoints remain. Checkpoints of later steps are
        removed too: they belong to a run that this one, resumed from an earlier step, replaced.
        """
        if batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        _check_loadable(state, "state")
        config_text = json.dumps(config, indent=2) + "\n"
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{batches:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=self.directory))
        try:
            _write_bytes(tmp / CONFIG_FILE, config_text.encode())
            size, digest = _write_state(tmp / STATE_FILE, state)
            meta = {
                "format_version": FORMAT_VERSION,
                "batches": batches,
                "state_file": STATE_FILE,
                "state_bytes": size,
                "state_sha256": digest,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "trainyard_version": __version__,
                "torch_version": torch.__version__,
            }
            _write_bytes(tmp / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
            _fsync_dir(tmp)
            self._move_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info(
            "saved checkpoint %s (%d bytes in %.2f s)", final, size, time.monotonic() - started
        )
        self._tidy(batches)
        return final

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, newest (highest step) first."""
        return [path for _, path in self._scan()]

    def load_latest(self) -> LoadedCheckpoint | None:
        """Load the newest checkpoint that passes verification, skipping damaged ones.

        Returns None when there is no checkpoint (a fresh start); raises CheckpointError when
        there are checkpoints but none is usable, since starting over silently would lose work.
        """
        checkpoints = self.list_checkpoints()
        if not checkpoints:
            return None
        reasons: list[str] = []
        for path in checkpoints:
            try:
                batches, state = _read(path)
            except CheckpointError as exc:
                reasons.append(str(exc))
                logger.warning("%s; skipped", exc)
                continue
            logger.info("loaded checkpoint %s", path)
            return LoadedCheckpoint(path, batches, state, [f"{r}; skipped" for r in reasons])
        listing = "\n".join(f"  - {reason}" for reason in reasons)
        raise CheckpointError(
            f"none of the {len(checkpoints)} checkpoint(s) in {self.directory} is usable:\n"
            f"{listing}\n"
            f"Delete {self.directory} to start the trial over from scratch, "
            "or restore a backup of a step-* folder into it."
        )

    def load(self, path: Path) -> LoadedCheckpoint:
        """Load one named checkpoint folder, with the same verification as load_latest."""
        path = Path(path)
        if not path.is_dir():
            raise NotFoundError(f"checkpoint {path} does not exist or is not a folder")
        try:
            batches, state = _read(path)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}\nChoose another checkpoint, or restore a backup of {path}."
            ) from None
        return LoadedCheckpoint(path, batches, state)

    def _scan(self) -> list[tuple[int, Path]]:
        """(batches, folder) of every complete checkpoint, newest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(match.group(1)), entry)
            for entry in self.directory.iterdir()
            if (match := _CHECKPOINT.fullmatch(entry.name)) and entry.is_dir()
        ]
        return sorted(found, key=lambda item: item[0], reverse=True)

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        """Rename the finished folder to its final name; a folder already there (a save at the
        same step by an earlier run) is first renamed aside, since rename cannot replace a
        non-empty folder."""
        aside = _aside(final) if final.exists() else None
        if aside is not None:
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def _tidy(self, saved: int) -> None:
        """Drop checkpoints newer than the one just saved, old ones beyond `keep`, and the
        temporary folders of crashed saves."""
        for batches, path in self._scan():
            if batches > saved:
                self._discard(path, f"newer than the checkpoint just saved at batch {saved}")
        for path in self.list_checkpoints()[self.keep :]:
            self._discard(path, f"only the newest {self.keep} are kept")
        for entry in self.directory.iterdir():
            if _LEFTOVER.fullmatch(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                logger.info("removed %s, left over from an interrupted save", entry)

    def _discard(self, path: Path, why: str) -> None:
        """Hide a checkpoint with one rename before deleting it, so a kill mid-delete never
        leaves a half-deleted folder that still looks like a checkpoint."""
        try:
            aside = _aside(path)
            os.replace(path, aside)
            shutil.rmtree(aside)
        except OSError as exc:
            logger.warning("could not remove checkpoint %s (%s): %s", path, why, exc)
            return
        logger.info("removed checkpoint %s: %s", path, why)


def _check_loadable(obj: Any, where: str) -> None:
    """Refuse, before anything is written, state that weights_only loading would reject:
    finding out at resume time would make every checkpoint of the run useless."""
    kind = type(obj)
    if kind in _LEAVES:
        return
    if kind in _SEQUENCES:
        for index, item in enumerate(obj):
            _check_loadable(item, f"{where}[{index}]")
        return
    if kind in _MAPPINGS:
        for key, value in obj.items():
            _check_loadable(key, f"a key of {where}")
            _check_loadable(value, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"cannot save checkpoint: {where} is a {kind.__module__}.{kind.__qualname__}, which "
        "torch.load(weights_only=True) refuses; store only tensors, numbers, strings, "
        "lists, tuples and dicts (e.g. float(x), x.tolist() or torch.as_tensor(x))"
    )


def _read(folder: Path) -> tuple[int, dict[str, Any]]:
    """Verify one checkpoint folder and load its state; CheckpointError names the bad file."""
    meta_path, state_path = folder / META_FILE, folder / STATE_FILE
    meta = _read_meta(meta_path)
    name = _CHECKPOINT.fullmatch(folder.name)
    if name and int(name.group(1)) != meta["batches"]:
        raise CheckpointError(
            f"{meta_path}: says batches={meta['batches']} but the folder is {folder.name}"
        )
    try:
        size = state_path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{state_path}: missing") from None
    expected = meta["state_bytes"]
    if size != expected:
        how = "truncated" if size < expected else "longer than written"
        raise CheckpointError(f"{state_path}: size {size} bytes, expected {expected} ({how})")
    digest = _sha256(state_path)
    if digest != meta["state_sha256"]:
        raise CheckpointError(
            f"{state_path}: sha256 {digest[:16]}..., expected {meta['state_sha256'][:16]}... "
            "(corrupted)"
        )
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read it makes the checkpoint unusable
        raise CheckpointError(
            f"{state_path}: torch.load(weights_only=True) failed: {_cause(exc)}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path}: holds a {type(state).__name__}, not a dict")
    return meta["batches"], state


def _cause(exc: Exception) -> str:
    """The gist of a torch.load error: weights_only errors run to paragraphs that suggest
    loading unsafely, which is never the fix for a checkpoint trainyard wrote."""
    text = str(exc)
    _, marker, after = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (after if marker else text).splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(exc).__name__


def _read_meta(path: Path) -> dict[str, Any]:
    """Parse meta.json and check the fields verification relies on."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r}, this trainyard reads {FORMAT_VERSION}"
            " (written by a different trainyard version?)"
        )
    for key, kind in (("batches", int), ("state_bytes", int), ("state_sha256", str)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    return meta


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_state(path: Path, state: dict[str, Any]) -> tuple[int, str]:
    """torch.save the state durably; return its size and sha256, read back from the file."""
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size, _sha256(path)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _aside(path: Path) -> Path:
    """A hidden sibling name that list_checkpoints ignores and the next save cleans up."""
    return path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")


def _fsync_dir(path: Path) -> None:
    """Make renames and new entries in a folder durable (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
