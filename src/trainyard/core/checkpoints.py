"""Checkpoints of a script trial: user-written folders, registered atomically.

`save(folder, step)` moves a folder the script has finished writing into the trial's
checkpoint store as `step-NNNNNNNN` (a rename when both are on one filesystem, else a copy
into a hidden temporary folder first), marks it complete with `trainyard-checkpoint.json`,
fsyncs and renames it into place: a `step-*` folder with that marker is always whole. Then the
store keeps the newest `checkpoint.keep` and tells the Master (or, in local mode, nobody) the
folders now on disk. `latest()` is the newest whole one, to resume from.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainyard.errors import CheckpointError
from trainyard.protocol import CheckpointEntry

MARKER = "trainyard-checkpoint.json"
"""Written last into a checkpoint folder: its step; a folder without it is not registered."""
_STEP_FOLDER = re.compile(r"step-(\d{8,})")


@dataclass(frozen=True)
class Checkpoint:
    """A registered checkpoint folder and the step it was saved at."""

    path: Path
    step: int


class CheckpointStore:
    """One trial's checkpoint folders; only the chief rank saves, every rank may read."""

    def __init__(
        self,
        directory: Path,
        *,
        keep: int,
        is_chief: bool,
        on_change: Callable[[list[CheckpointEntry]], None],
    ) -> None:
        self.directory = directory
        self._keep = keep
        self._is_chief = is_chief
        self._on_change = on_change

    def save(self, folder: str | os.PathLike[str], step: int) -> Checkpoint | None:
        """Register the finished folder `folder` as the checkpoint of `step` (it is moved).

        On other ranks than the chief this does nothing and returns None: they may write into
        the folder first, and the script waits for them (a barrier) before the chief saves.

        Raises:
            CheckpointError: the folder does not exist (any more) or is not a folder.
        """
        if not self._is_chief:
            return None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(
                f"ctx.checkpoint.save: step must be a whole number >= 0, not {step!r}"
            )
        source = Path(folder).absolute()
        if not source.is_dir():
            raise _vanished(source, step)
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{step:08d}"
        temporary = self.directory / f".step-{step:08d}.tmp-{os.getpid()}"
        try:
            _move(source, temporary)
        except FileNotFoundError:
            raise _vanished(source, step) from None
        (temporary / MARKER).write_text(json.dumps({"step": step}))
        _fsync_tree(temporary)
        _replace(temporary, final)
        self._prune(step)
        self._on_change(self.entries())
        return Checkpoint(final, step)

    def latest(self) -> Checkpoint | None:
        """The newest whole checkpoint, or None when the trial has none yet."""
        found = self.list()
        return found[-1] if found else None

    def list(self) -> list[Checkpoint]:
        """Whole checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _STEP_FOLDER.fullmatch(path.name)
            if match and (path / MARKER).is_file():
                found.append(Checkpoint(path, int(match.group(1))))
        return sorted(found, key=lambda c: c.step)

    def entries(self) -> list[CheckpointEntry]:
        """The protocol's inventory of the folders on disk."""
        return [CheckpointEntry(batches=c.step, path=str(c.path), epoch=0.0) for c in self.list()]

    def _prune(self, saved: int) -> None:
        """Drop steps after the one just saved (a run this one replaced) and all but the
        newest `keep`."""
        found = self.list()
        newer = [c for c in found if c.step > saved]
        older = [c for c in found if c.step <= saved][: -self._keep]
        for checkpoint in newer + older:
            shutil.rmtree(checkpoint.path, ignore_errors=True)


def _vanished(source: Path, step: int) -> CheckpointError:
    return CheckpointError(
        f"ctx.checkpoint.save: checkpoint folder {source} for step {step} does not exist "
        "(it was removed or renamed before it was registered); write the folder completely, "
        "then call ctx.checkpoint.save(folder, step) and leave the folder alone until it returns"
    )


def _move(source: Path, target: Path) -> None:
    """A rename; across filesystems a copy, then the source is removed."""
    try:
        os.rename(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        shutil.copytree(source, target)
        shutil.rmtree(source)


def _replace(temporary: Path, final: Path) -> None:
    """Put `temporary` at `final`, atomically; a checkpoint saved again at the same step (a
    resumed run) replaces the old one."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.rename(final, old)
    os.rename(temporary, final)
    _fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            _fsync(path)
    _fsync(folder)


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    with contextlib.suppress(OSError):
        descriptor = os.open(path, flags)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
