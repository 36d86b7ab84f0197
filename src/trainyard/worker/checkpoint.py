"""Atomic, verified checkpoints that let a killed trial resume bit-exactly.

A kill can land at any moment, including mid-save, so a checkpoint is written into a hidden
temporary folder and renamed into place only once every file is on disk: a folder named
`step-NNNNNNNN` is always complete. Its meta.json records the size and sha256 of every file, so
a file damaged later (full disk, partial copy, bit rot) is refused on load and the previous
checkpoint is used instead of resuming from garbage. State is loaded with `weights_only=True`,
so a checkpoint can never run code when it is read.

Two layouts share that folder. "file": state.pt holds everything (one process or DDP, written
by rank 0). "sharded" (FSDP): each rank writes its shards of model and optimizer with
torch.distributed.checkpoint into shards/, which can be read back on any number of ranks, and
rank 0 writes the rest (schedule, data position, RNG states) to state.pt.
"""

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from trainyard import __version__
from trainyard.errors import CheckpointError, NotFoundError
from trainyard.worker import checkpoint_files as files
from trainyard.worker.distributed import World

logger = logging.getLogger(__name__)

# Keys of the state dict a worker saves; one place so saver and loader cannot drift apart.
MODEL = "model"
OPTIMIZER = "optimizer"
LR_SCHEDULER = "lr_scheduler"
DATALOADER = "dataloader"
TRAIN_STATE = "train_state"
RNG = "rng"

FORMAT_VERSION = 2
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
SHARDS_DIR = "shards"
LAYOUT_FILE = "file"
LAYOUT_SHARDED = "sharded"

_CHECKPOINT = re.compile(r"step-(\d{8,})")
_LEFTOVER = re.compile(r"\.step-\d{8,}\.(?:tmp|old)-.+")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A verified checkpoint, plus why any newer ones were passed over (for the trial log)."""

    path: Path
    batches: int
    state: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    world_size: int = 1
    """Ranks that wrote it: per-rank RNG states apply only to a run of the same size."""
    shards: Path | None = None
    """The torch.distributed.checkpoint folder of a sharded checkpoint; see `load_shards`."""


class CheckpointManager:
    """Saves, prunes and loads the checkpoints of one trial in one directory.

    Only rank 0 writes the directory itself (other ranks write only their shards into the
    folder it made), and only one trial at a time: a save deletes the temporary folders that
    earlier, crashed saves left behind.
    """

    def __init__(self, directory: Path, *, keep: int, world: World | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.world = world or World()

    def save(
        self,
        batches: int,
        state: dict[str, Any],
        *,
        config: dict[str, Any],
        shards: dict[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint for `batches` trained batches atomically; return its folder.

        Without `shards` only rank 0 calls this. With `shards` (a sharded state dict, FSDP's)
        every rank does: each writes its part of `shards`, and rank 0 alone writes `state`
        and `config` (other ranks may pass empty ones).

        Afterwards only the newest `keep` checkpoints remain. Checkpoints of later steps are
        removed too: they belong to a run that this one, resumed from an earlier step, replaced.
        """
        if batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        primary = self.world.is_primary
        started = time.monotonic()
        final = self.directory / f"step-{batches:08d}"
        tmp: Path | None = None
        try:
            if primary:
                files.check_loadable(state, "state")
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=self.directory))
            if shards is not None:
                if primary:
                    (tmp / SHARDS_DIR).mkdir()
                tmp = self.world.broadcast(tmp)
                self._write_shards(shards, tmp / SHARDS_DIR)
            if not primary:
                return final
            size = self._write_files(tmp, batches, state, config, sharded=shards is not None)
            self._move_into_place(tmp, final)
        except BaseException:
            if primary and tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info(
            "saved checkpoint %s (%d bytes in %.2f s)", final, size, time.monotonic() - started
        )
        self._tidy(batches)
        return final

    def load_shards(self, loaded: LoadedCheckpoint, target: dict[str, Any]) -> None:
        """Fill `target` (a state dict shaped like the one saved as `shards`, for this run's
        ranks and sharding) in place from a sharded checkpoint; every rank calls this."""
        assert loaded.shards is not None, "only sharded checkpoints have shards"
        try:
            with _single_process_is_intended():
                dcp.load(
                    target,
                    storage_reader=dcp.FileSystemReader(loaded.shards),
                    no_dist=self.world.size == 1,
                )
        except Exception as exc:  # any mismatch makes the shards unusable for this model
            raise CheckpointError(
                f"{loaded.shards}: cannot load the model and optimizer shards "
                f"({files.error_gist(exc)}); was it written for another model or optimizer? "
                "Resume with the settings it was written with, or delete it to start over"
            ) from exc

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, newest (highest step) first."""
        return [path for _, path in self.scan()]

    def load_latest(self) -> LoadedCheckpoint | None:
        """Load the newest checkpoint that passes verification, skipping damaged ones.

        Returns None when there is no checkpoint (a fresh start); raises CheckpointError when
        there are checkpoints but none is usable, since starting over silently would lose work.
        With several ranks every rank calls this: rank 0 verifies and picks the checkpoint,
        the others load the one it picked.
        """
        if self.world.size == 1:
            return self._load_latest_verified()
        # Rank 0's verdict: a (folder, skipped) choice, None for a fresh start, or the error.
        loaded, verdict = None, None
        if self.world.is_primary:
            try:
                loaded = self._load_latest_verified()
                verdict = (loaded.path, loaded.skipped) if loaded else None
            except CheckpointError as exc:
                verdict = str(exc)
        verdict = self.world.broadcast(verdict)
        if isinstance(verdict, str):
            raise CheckpointError(verdict)
        if self.world.is_primary or verdict is None:
            return loaded
        path, skipped = verdict
        return _read(path, skipped=skipped, verify=False)

    def _load_latest_verified(self) -> LoadedCheckpoint | None:
        checkpoints = self.list_checkpoints()
        if not checkpoints:
            return None
        reasons: list[str] = []
        for path in checkpoints:
            try:
                loaded = _read(path, skipped=[f"{r}; skipped" for r in reasons], verify=True)
            except CheckpointError as exc:
                reasons.append(str(exc))
                logger.warning("%s; skipped", exc)
                continue
            logger.info("loaded checkpoint %s", path)
            return loaded
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
            return _read(path, skipped=[], verify=True)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}\nChoose another checkpoint, or restore a backup of {path}."
            ) from None

    def scan(self) -> list[tuple[int, Path]]:
        """(batches, folder) of every complete checkpoint, newest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(match.group(1)), entry)
            for entry in self.directory.iterdir()
            if (match := _CHECKPOINT.fullmatch(entry.name)) and entry.is_dir()
        ]
        return sorted(found, key=lambda item: item[0], reverse=True)

    def _write_shards(self, shards: dict[str, Any], folder: Path) -> None:
        """Every rank writes its shards (fsynced); DCP's last step, on rank 0, writes their
        index (.metadata) once every rank's files are done."""
        with _single_process_is_intended():
            dcp.save(
                shards,
                storage_writer=dcp.FileSystemWriter(folder, sync_files=True),
                no_dist=self.world.size == 1,
            )
        if self.world.is_primary:
            files.fsync_dir(folder)

    def _write_files(
        self,
        tmp: Path,
        batches: int,
        state: dict[str, Any],
        config: dict[str, Any],
        *,
        sharded: bool,
    ) -> int:
        """config.json, state.pt and meta.json (last, naming every file's size and sha256)."""
        files.write_bytes(tmp / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
        size, digest = files.write_state(tmp / STATE_FILE, state)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "batches": batches,
            "layout": LAYOUT_SHARDED if sharded else LAYOUT_FILE,
            "world_size": self.world.size,
            "state_file": STATE_FILE,
            "state_bytes": size,
            "state_sha256": digest,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "trainyard_version": __version__,
            "torch_version": torch.__version__,
        }
        if sharded:
            shard_files = sorted(p for p in (tmp / SHARDS_DIR).rglob("*") if p.is_file())
            meta["shards"] = {
                str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": files.sha256(p)}
                for p in shard_files
            }
            size += sum(entry["bytes"] for entry in meta["shards"].values())
        files.write_bytes(tmp / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
        files.fsync_dir(tmp)
        return size

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        """Rename the finished folder to its final name; a folder already there (a save at the
        same step by an earlier run) is first renamed aside, since rename cannot replace a
        non-empty folder."""
        aside = _aside(final) if final.exists() else None
        if aside is not None:
            os.replace(final, aside)
        os.replace(tmp, final)
        files.fsync_dir(self.directory)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def _tidy(self, saved: int) -> None:
        """Drop checkpoints newer than the one just saved, old ones beyond `keep`, and the
        temporary folders of crashed saves."""
        for batches, path in self.scan():
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


def _read(folder: Path, *, skipped: list[str], verify: bool) -> LoadedCheckpoint:
    """Load one checkpoint folder's state.pt, after checking every file against meta.json
    when `verify`; CheckpointError names the bad file."""
    meta_path, state_path = folder / META_FILE, folder / STATE_FILE
    meta = _read_meta(meta_path)
    name = _CHECKPOINT.fullmatch(folder.name)
    if name and int(name.group(1)) != meta["batches"]:
        raise CheckpointError(
            f"{meta_path}: says batches={meta['batches']} but the folder is {folder.name}"
        )
    sharded = meta["layout"] == LAYOUT_SHARDED
    if verify:
        files.verify_file(state_path, meta["state_bytes"], meta["state_sha256"])
        for relative, entry in meta.get("shards", {}).items():
            files.verify_file(folder / relative, entry["bytes"], entry["sha256"])
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to read it makes the checkpoint unusable
        raise CheckpointError(
            f"{state_path}: torch.load(weights_only=True) failed: {files.error_gist(exc)}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path}: holds a {type(state).__name__}, not a dict")
    return LoadedCheckpoint(
        path=folder,
        batches=meta["batches"],
        state=state,
        skipped=skipped,
        world_size=meta["world_size"],
        shards=folder / SHARDS_DIR if sharded else None,
    )


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
    fields = (("batches", int), ("world_size", int), ("state_bytes", int))
    for key, kind in (*fields, ("state_sha256", str), ("layout", str)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    if meta["layout"] not in (LAYOUT_FILE, LAYOUT_SHARDED):
        raise CheckpointError(f"{path}: unknown layout {meta['layout']!r}")
    shards = meta.get("shards", {})
    if not isinstance(shards, dict) or (meta["layout"] == LAYOUT_SHARDED and not shards):
        raise CheckpointError(f"{path}: a sharded checkpoint must list its shard files")
    for name, entry in shards.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            raise CheckpointError(f"{path}: the entry of shard {name!r} is malformed")
    return meta


@contextlib.contextmanager
def _single_process_is_intended() -> Iterator[None]:
    """DCP warns that it assumes one process when there is no process group; here that is
    the plan (a sharded checkpoint read back by one rank), not a mistake to warn about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _aside(path: Path) -> Path:
    """A hidden sibling name that list_checkpoints ignores and the next save cleans up."""
    return path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
