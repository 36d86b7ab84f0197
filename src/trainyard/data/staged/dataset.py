"""The on-disk format of a staged dataset, and the validated handle that opens it.

A staged dataset is one folder:

    manifest.json           names, dtypes and per-jet shapes, jets per shard, the key, extras
    <array>.<shard>.npy     one .npy file per array per shard, rows = jets, data at byte 4096

Each shard file is a plain .npy file (np.load reads it, memory-mapped or not) whose header is
padded to one page, so rows start page-aligned for mmap, O_DIRECT and GPUDirect Storage.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from trainyard.errors import DataError

STAGING_FORMAT_VERSION = 1
"""Bump when the layout or the meaning of staged arrays changes; it is part of every key."""
MANIFEST_NAME = "manifest.json"
DATA_OFFSET = 4096
"""Bytes before the first row of every shard file: one page, so rows start page-aligned."""
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_RESTAGE_HINT = "delete the folder and stage again (`trainyard data stage`)"


@dataclass(frozen=True)
class ArraySpec:
    """The dtype and per-jet shape of one staged array."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        """Bytes one jet takes in this array."""
        return self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class StagedDataset:
    """A finished staged folder, validated against its manifest; arrays open memory-mapped."""

    root: Path
    key: str
    specs: dict[str, ArraySpec]
    shard_sizes: tuple[int, ...]
    jets_per_shard: int
    extra: dict[str, Any] = field(default_factory=dict)
    lease: IO[str] | None = field(default=None, compare=False, repr=False)
    """The reader's shared lock on this dataset (`staged.cache`): while it is open, the
    cache's eviction leaves the folder alone. Closed when the dataset is dropped."""

    @property
    def num_jets(self) -> int:
        """Jets in the whole dataset."""
        return sum(self.shard_sizes)

    @property
    def num_bytes(self) -> int:
        """Bytes of row data in all shard files (headers excluded)."""
        return self.num_jets * sum(spec.row_bytes for spec in self.specs.values())

    def shard_path(self, name: str, shard: int) -> Path:
        """The file holding array ``name`` of shard ``shard``."""
        return self.root / shard_file_name(name, shard)

    def open_arrays(self, name: str) -> list[np.ndarray]:
        """Read-only memory maps of array ``name``, one per shard, each (jets in shard, *X)."""
        if name not in self.specs:
            raise DataError(
                f"the staged dataset {self.root} has no array {name!r}; it has "
                f"{sorted(self.specs)}; name one of those"
            )
        return [
            np.load(self.shard_path(name, shard), mmap_mode="r")
            for shard in range(len(self.shard_sizes))
        ]

    @classmethod
    def open(cls, root: Path) -> StagedDataset:
        """Read ``root/manifest.json`` and check that every shard file has the size it says."""
        root = Path(root)
        manifest_path = root / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format_version") != STAGING_FORMAT_VERSION:
                raise DataError(
                    f"{root} was staged with format version {manifest.get('format_version')}, "
                    f"this trainyard reads version {STAGING_FORMAT_VERSION}; {_RESTAGE_HINT}"
                )
            specs = {
                name: ArraySpec(np.dtype(entry["dtype"]), tuple(entry["shape"]))
                for name, entry in manifest["arrays"].items()
            }
            dataset = cls(
                root=root,
                key=str(manifest["key"]),
                specs=specs,
                shard_sizes=tuple(int(n) for n in manifest["shard_sizes"]),
                jets_per_shard=int(manifest["jets_per_shard"]),
                extra=dict(manifest.get("extra", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(
                f"{manifest_path} is missing or unreadable ({error}); {_RESTAGE_HINT}"
            ) from error
        for name, spec in specs.items():
            for shard, num_jets in enumerate(dataset.shard_sizes):
                path = dataset.shard_path(name, shard)
                expected = DATA_OFFSET + num_jets * spec.row_bytes
                actual = path.stat().st_size if path.is_file() else None
                if actual != expected:
                    raise DataError(
                        f"{path} should hold {expected} bytes ({num_jets} jets of {name}) but "
                        f"{'is missing' if actual is None else f'holds {actual}'}; "
                        f"the staged folder {root} is damaged, {_RESTAGE_HINT}"
                    )
        return dataset


def npy_header(spec: ArraySpec, num_jets: int) -> bytes:
    """A .npy v1.0 header padded to DATA_OFFSET bytes, so np.load reads the shard as is."""
    header = {"descr": spec.dtype.str, "fortran_order": False, "shape": (num_jets, *spec.shape)}
    length = DATA_OFFSET - len(_NPY_MAGIC) - 2
    text = repr(header).encode("ascii").ljust(length - 1) + b"\n"
    return _NPY_MAGIC + struct.pack("<H", length) + text


def shard_file_name(name: str, shard: int) -> str:
    """``<array>.<shard:05d>.npy``: files of one array sort together, shards in order."""
    return f"{name}.{shard:05d}.npy"
