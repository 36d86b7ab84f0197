"""Write chunks of fixed-shape arrays into shard files, checking each chunk against the first.

Array legend (suffixes give the shape):
    N  jets in a chunk
    X  the fixed per-jet shape of one array, e.g. (C, P)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from trainyard.data.staged.dataset import DATA_OFFSET, ArraySpec, npy_header, shard_file_name
from trainyard.errors import DataError

logger = logging.getLogger(__name__)

_ARRAY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")

OpenFile = Callable[[Path], BinaryIO]
"""Opens a new shard file for writing; tests inject one that fails like a full disk."""


class ShardWriter:
    """Appends rows to one file per array, starting a new shard every ``jets_per_shard`` jets.

    A shard's .npy header is written with a placeholder count and rewritten when it closes,
    so chunks stream through without knowing the total up front.
    """

    def __init__(
        self, folder: Path, specs: dict[str, ArraySpec], jets_per_shard: int, open_file: OpenFile
    ) -> None:
        self.specs = specs
        self._folder = folder
        self._jets_per_shard = jets_per_shard
        self._open_file = open_file
        self._files: dict[str, BinaryIO] = {}
        self._shard_sizes: list[int] = []
        self._jets_in_shard = 0
        self.num_jets = 0
        self.bytes_written = 0

    def bytes_needed(self, num_jets: int) -> int:
        """Disk space for ``num_jets`` jets, headers included."""
        num_shards = -(-num_jets // self._jets_per_shard)
        row_bytes = sum(spec.row_bytes for spec in self.specs.values())
        return num_jets * row_bytes + num_shards * len(self.specs) * DATA_OFFSET

    def append(self, arrays_NX: dict[str, np.ndarray]) -> None:
        """Write all rows of one chunk, splitting it where a shard fills up."""
        num_rows = len(next(iter(arrays_NX.values())))
        start = 0
        while start < num_rows:
            if not self._files:
                self._open_shard()
            stop = min(num_rows, start + self._jets_per_shard - self._jets_in_shard)
            for name, array_NX in arrays_NX.items():
                part = memoryview(array_NX[start:stop]).cast("B")
                self._files[name].write(part)
                self.bytes_written += part.nbytes
            self._jets_in_shard += stop - start
            self.num_jets += stop - start
            start = stop
            if self._jets_in_shard == self._jets_per_shard:
                self._close_shard()

    def finish(self) -> list[int]:
        """Close the last shard; returns the jets per shard."""
        if self._files:
            self._close_shard()
        return list(self._shard_sizes)

    def _open_shard(self) -> None:
        shard = len(self._shard_sizes)
        for name, spec in self.specs.items():
            file = self._open_file(self._folder / shard_file_name(name, shard))
            self._files[name] = file
            file.write(npy_header(spec, 0))

    def _close_shard(self) -> None:
        for name, file in self._files.items():
            file.seek(0)
            file.write(npy_header(self.specs[name], self._jets_in_shard))
            file.flush()
            os.fsync(file.fileno())
            file.close()
        self._files = {}
        self._shard_sizes.append(self._jets_in_shard)
        self._jets_in_shard = 0

    def close_quietly(self) -> None:
        """Close open files after a failure; their folder is deleted anyway."""
        for file in self._files.values():
            try:
                file.close()
            except OSError:
                logger.debug("closing %s after a failed write also failed", file)
        self._files = {}


def checked_chunk(
    chunk: Mapping[str, np.ndarray], index: int, specs: dict[str, ArraySpec] | None
) -> dict[str, np.ndarray]:
    """Contiguous native-endian arrays of one chunk, checked against the first chunk."""
    where = f"chunk {index} of the staging input"
    if not chunk:
        raise DataError(f"{where} holds no arrays; every chunk must map names to arrays")
    arrays: dict[str, np.ndarray] = {}
    for name, value in chunk.items():
        array = np.asarray(value)
        if not _ARRAY_NAME.fullmatch(name):
            raise DataError(
                f"{where}: array name {name!r} is not usable as a file name; use letters, "
                "digits, '_' and '-' (not starting with '-')"
            )
        if array.ndim == 0 or array.dtype.kind not in "biuf":
            raise DataError(
                f"{where}: array {name!r} is {array.dtype} with shape {array.shape}; staged "
                "arrays must be numeric with one row per jet"
            )
        arrays[name] = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"{where}: arrays have different numbers of jets {lengths}; every array of a chunk "
            "needs one row per jet"
        )
    if specs is not None:
        got = {name: ArraySpec(a.dtype, a.shape[1:]) for name, a in arrays.items()}
        if got != specs:
            raise DataError(
                f"{where} has arrays {describe(got)} but chunk 0 had {describe(specs)}; every "
                "chunk must have the same names, dtypes and per-jet shapes (pad to fixed length)"
            )
    return arrays


def open_new(path: Path) -> BinaryIO:
    """Create a shard file; it must not exist yet (each stager has its own folder)."""
    return path.open("xb")


def describe(specs: Mapping[str, ArraySpec]) -> str:
    """Names, dtypes and per-jet shapes, for messages."""
    return ", ".join(f"{n}: {s.dtype} {s.shape}" for n, s in sorted(specs.items()))
