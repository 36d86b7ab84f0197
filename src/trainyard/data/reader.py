"""Find dataset files and read them into one table, with errors a user can act on.

Everything that can go wrong with input files (nothing matches, a corrupt shard, a missing
column, shards written with different layouts) is reported here as a DataError that names the
file, so the training code can assume a clean table. ``read_jet_table`` reads our Parquet jet
schema into Arrow; ``read_branches`` reads any branches of Parquet, ROOT or HDF5 files into
awkward, for weaver data configs; awkward is imported there only, since a worker reading
staged data never needs it (its import is a few tenths of a second of every trial's start).
"""

from __future__ import annotations

import glob
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainyard.errors import DataError
from trainyard.suggest import did_you_mean

if TYPE_CHECKING:
    import awkward as ak

logger = logging.getLogger(__name__)

_GLOB_CHARACTERS = frozenset("*?[")
_GENERATE_HINT = "create a dataset with `trainyard data generate toy` or fix the path"
_FORMATS = {".parquet": "Parquet", ".root": "ROOT", ".h5": "HDF5", ".hdf5": "HDF5"}
READ_FORMATS = "Parquet (.parquet), ROOT (.root) and HDF5 (.h5, .hdf5)"
"""The file formats trainyard reads, for messages; a folder is read for its .parquet files."""


def resolve_files(
    pattern: str | Path | Sequence[str | Path], *, base_dir: Path | None = None
) -> list[Path]:
    """Expand glob patterns, file paths or directories (of *.parquet) into a list of files.

    Relative entries are resolved against ``base_dir`` (default: the working directory), so an
    experiment file can name its data relative to itself. Each entry must match something;
    results keep the order of the entries, sorted within a glob, each file once.
    """
    entries = [pattern] if isinstance(pattern, str | Path) else list(pattern)
    if not entries:
        raise DataError(f"no dataset files were given; {_GENERATE_HINT} and list it")
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    # Keyed by real path: a file reached twice (overlapping globs, symlinks) is read once.
    resolved: dict[Path, Path] = {}
    for entry in entries:
        for path in _expand(str(entry), root):
            resolved.setdefault(path.resolve(), path)
    return list(resolved.values())


def _expand(entry: str, root: Path) -> list[Path]:
    """Match one entry: a file, a directory of Parquet files, or else a glob pattern."""
    relative_or_absolute = Path(entry).expanduser()
    full = root / relative_or_absolute  # an absolute right-hand side wins
    if full.is_file():
        matches = [full]
    elif full.is_dir():
        matches = sorted(p for p in full.glob("*.parquet") if p.is_file())
    elif _GLOB_CHARACTERS & set(entry):
        # root_dir keeps glob characters inside root itself from being read as a pattern.
        names = glob.glob(str(relative_or_absolute), root_dir=root, recursive=True)
        matches = [m for m in sorted(root / name for name in names) if m.is_file()]
    else:
        matches = []
    if not matches:
        # An absolute entry does not depend on the folder a process runs in (a server's).
        where = (
            f"looked for {full}"
            if relative_or_absolute.is_absolute()
            else (f"resolved against {root}, looked for {full}")
        )
        raise DataError(
            f"no dataset file matches {entry!r} ({where}); "
            f"{_found_instead(full)}. trainyard reads {READ_FORMATS} files (a folder for its "
            f".parquet files): convert yours to one of those, or {_GENERATE_HINT}"
        )
    return matches


def _found_instead(full: Path) -> str:
    """What the folder an entry points into holds, so a user sees why nothing matched."""
    folder = full
    while not folder.is_dir() and (_GLOB_CHARACTERS & set(folder.name) or not folder.exists()):
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    counts: dict[str, int] = {}
    for path in folder.iterdir():
        if path.is_file():
            suffix = path.suffix.lower() or "extension-less"
            counts[suffix] = counts.get(suffix, 0) + 1
    if not counts:
        return f"{folder} holds no files"
    listed = ", ".join(
        f"{number} {suffix} file{'s' if number > 1 else ''}"
        for suffix, number in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    )
    return f"{folder} holds {listed}"


def read_jet_table(files: Sequence[Path], columns: Sequence[str]) -> pa.Table:
    """Read ``columns`` from every file and concatenate them in file order.

    All files must be readable Parquet, hold every requested column, and agree on the column
    types, because one table with one type per column is what the feature code expects.
    """
    if not files:
        raise DataError(f"no dataset files to read; {_GENERATE_HINT}")
    paths = [Path(file) for file in files]
    columns = list(columns)
    schemas = [_requested_schema(path, columns) for path in paths]
    for path, schema in zip(paths[1:], schemas[1:], strict=True):
        difference = _first_difference(paths[0], schemas[0], path, schema)
        if difference is not None:
            raise DataError(
                f"{paths[0]} and {path} have different schemas: {difference}; "
                "read only files written by the same generator version together"
            )
    return pa.concat_tables([_read_columns(path, columns) for path in paths])


def _requested_schema(path: Path, columns: list[str]) -> pa.Schema:
    """The file's schema restricted to ``columns``; a DataError if any column is missing."""
    file_schema = _read_schema(path)
    missing = [name for name in columns if name not in file_schema.names]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}; available columns: {file_schema.names}. "
            "Regenerate it in the trainyard jet schema or choose other inputs"
        )
    return pa.schema([file_schema.field(name) for name in columns])


def _read_schema(path: Path) -> pa.Schema:
    """Open the footer, turning a corrupt or truncated file into a DataError naming it."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{path} is not a readable Parquet file (corrupt or truncated?): {error}; "
            "delete it and regenerate the dataset"
        ) from error


def _read_columns(path: Path, columns: list[str]) -> pa.Table:
    """Read the data pages, which can be damaged even when the footer is intact.

    `ParquetFile.read`, not `pq.read_table`: the latter goes through pyarrow.dataset, whose
    first import (it imports pandas) costs each fresh worker about a second."""
    try:
        with pq.ParquetFile(path) as parquet:
            return parquet.read(columns=columns).replace_schema_metadata(None)
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{path} could not be read (corrupt or truncated data?): {error}; "
            "delete it and regenerate the dataset"
        ) from error


def _first_difference(
    first_file: Path, first_schema: pa.Schema, path: Path, schema: pa.Schema
) -> str | None:
    """Describe the first requested column whose type or nullability differs, if any."""
    for first_field, field in zip(first_schema, schema, strict=True):
        if not first_field.equals(field):
            return (
                f"column {field.name!r} is {first_field.type} (nullable={first_field.nullable})"
                f" in {first_file} but {field.type} (nullable={field.nullable}) in {path}"
            )
    return None


# Branches of Parquet, ROOT and HDF5 files as one awkward array, for weaver data configs.

_TREE_CLASSES = ("TTree", "ROOT::RNTuple")
"""What uproot can read as a table of events: classic trees and the newer RNTuples."""


class MissingBranchesError(DataError):
    """A file lacks requested branches; callers that know why they were needed re-explain it."""

    def __init__(self, path: Path, missing: list[str], available: list[str]) -> None:
        self.path, self.missing, self.available = path, missing, available
        hints = "; ".join(
            hint
            for name in missing
            if (hint := did_you_mean(name, available, before=f"{name!r}: ", after=""))
        )
        super().__init__(
            f"{path} has no branch(es) {missing}{f' ({hints})' if hints else ''}; available "
            f"branches: {available}. Fix the names or read other files"
        )


class _UnreadableFileError(Exception):
    """A file's bytes could not be decoded: corrupt, truncated or not of its format."""


def read_branches(
    files: Sequence[Path],
    branches: Sequence[str],
    *,
    treename: str | None = None,
    load_range: tuple[float, float] | None = None,
    skip_bad_files: bool = False,
    branch_magic: Mapping[str, str] | None = None,
    file_magic: Mapping[str, Sequence[tuple[str, float]]] | None = None,
) -> ak.Array:
    """Read ``branches`` of every file (by extension: .parquet, .root, .h5/.hdf5) into one array.

    ``load_range`` = (start, stop) reads that fraction of each file's events, as weaver does.
    Every file must hold the branches with the same types (options aside) as the first one.
    An unreadable file stops the read, or with ``skip_bad_files`` is skipped and logged.
    ``branch_magic`` renames ROOT branches (substring -> replacement) before reading;
    ``file_magic`` adds a constant column per file: the value of the first regex matching its
    path, else 0.
    """
    import awkward as ak

    paths = [Path(file) for file in files]
    if not paths:
        raise DataError(f"no dataset files to read; {_GENERATE_HINT}")
    branches = list(dict.fromkeys(branches))
    arrays: list[ak.Array] = []
    first: tuple[Path, dict[str, str]] | None = None
    skipped: list[Path] = []
    for path in paths:
        try:
            array = _read_file(path, branches, treename, load_range, branch_magic or {})
        except _UnreadableFileError as error:
            if not skip_bad_files:
                raise DataError(
                    f"{path} could not be read as {_FORMATS[path.suffix]} (corrupt or "
                    f"truncated?): {error}; re-create or delete it, or pass "
                    "skip_bad_files=True to skip unreadable files"
                ) from error
            logger.warning("skipping unreadable file %s: %s", path, error)
            skipped.append(path)
            continue
        except MissingBranchesError as error:
            if first is None:
                raise
            raise DataError(
                f"{first[0]} and {path} have different schemas: {path} lacks branch(es) "
                f"{error.missing} that {first[0]} has; read files of one layout together"
            ) from error
        signature = {name: _type_name(array[name].type.content) for name in branches}
        if first is None:
            first = (path, signature)
        else:
            _check_same_schema(first, path, signature)
        for name, patterns in (file_magic or {}).items():
            value = next((v for regex, v in patterns if re.search(regex, str(path))), 0)
            array[name] = value
        arrays.append(array)
    if skipped:
        logger.warning(
            "skipped %d unreadable file(s): %s", len(skipped), [str(p) for p in skipped]
        )
    if not arrays:
        raise DataError(
            f"none of the {len(paths)} file(s) could be read ({[str(p) for p in skipped]}); "
            "check that they are complete"
        )
    return arrays[0] if len(arrays) == 1 else ak.concatenate(arrays)


def _check_same_schema(
    first: tuple[Path, dict[str, str]], path: Path, signature: dict[str, str]
) -> None:
    first_path, first_signature = first
    for name, type_name in signature.items():
        if type_name != first_signature[name]:
            raise DataError(
                f"{first_path} and {path} have different schemas: branch {name!r} is "
                f"{first_signature[name]} in {first_path} but {type_name} in {path}; read files "
                "of one layout together"
            )


def _type_name(array_type: ak.types.Type) -> str:
    """The type without option markers, which differ between formats holding the same data."""
    import awkward as ak

    if isinstance(array_type, ak.types.OptionType):
        return _type_name(array_type.content)
    if isinstance(array_type, ak.types.ListType):
        return f"var * {_type_name(array_type.content)}"
    if isinstance(array_type, ak.types.RegularType):
        return f"{array_type.size} * {_type_name(array_type.content)}"
    return str(array_type)


def _read_file(
    path: Path,
    branches: list[str],
    treename: str | None,
    load_range: tuple[float, float] | None,
    branch_magic: Mapping[str, str],
) -> ak.Array:
    """One file's branches; library errors become _UnreadableFileError, ours pass through."""
    if path.suffix not in _FORMATS:
        raise DataError(
            f"{path} has extension {path.suffix!r}; trainyard reads {READ_FORMATS} files, "
            "convert it to one of those"
        )
    try:
        if path.suffix == ".parquet":
            return _read_parquet(path, branches, load_range)
        if path.suffix == ".root":
            return _read_root(path, branches, treename, load_range, branch_magic)
        return _read_hdf5(path, branches, load_range)
    except DataError:
        raise
    except Exception as error:  # each format library fails on damaged bytes in its own way
        raise _UnreadableFileError(f"{type(error).__name__}: {error}") from error


def _entry_range(num_entries: int, load_range: tuple[float, float] | None) -> tuple[int, int]:
    """weaver's rows for a fractional range: at least one row, fractions truncated."""
    if load_range is None:
        return 0, num_entries
    start = math.trunc(load_range[0] * num_entries)
    return start, max(start + 1, math.trunc(load_range[1] * num_entries))


def _require(path: Path, branches: list[str], available: list[str]) -> None:
    missing = [name for name in branches if name not in available]
    if missing:
        raise MissingBranchesError(path, missing, available)


def _read_parquet(
    path: Path, branches: list[str], load_range: tuple[float, float] | None
) -> ak.Array:
    """Only the row groups that overlap the range are read, so a small sample stays cheap."""
    import awkward as ak

    parquet = pq.ParquetFile(path)
    _require(path, branches, parquet.schema_arrow.names)
    start, stop = _entry_range(parquet.metadata.num_rows, load_range)
    groups, first_row, row = [], 0, 0
    for index in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(index).num_rows
        if row < stop and row + size > start:
            first_row = row if not groups else first_row
            groups.append(index)
        row += size
    table = parquet.read_row_groups(groups, columns=branches)
    return ak.from_arrow(table)[start - first_row : stop - first_row]


def _read_root(
    path: Path,
    branches: list[str],
    treename: str | None,
    load_range: tuple[float, float] | None,
    branch_magic: Mapping[str, str],
) -> ak.Array:
    import awkward as ak
    import uproot

    with uproot.open(path) as file:
        trees = sorted(
            {key.split(";")[0] for key, kind in file.classnames().items() if kind in _TREE_CLASSES}
        )
        if treename is None and len(trees) != 1:
            raise DataError(
                f"{path} holds {len(trees)} trees {trees}; say which to read with treename= "
                "or the config's `treename`"
            )
        name = treename or trees[0]
        if name not in trees:
            raise DataError(f"{path} has no tree {name!r}; its trees are {trees}, fix treename")
        tree = file[name]
        stored = {branch: _rename(branch, branch_magic) for branch in branches}
        available = list(tree.keys())
        missing = [branch for branch, real in stored.items() if real not in available]
        if missing:
            raise MissingBranchesError(path, missing, available)
        start, stop = _entry_range(tree.num_entries, load_range)
        read = tree.arrays(
            filter_name=sorted(set(stored.values())), entry_start=start, entry_stop=stop
        )
    return ak.zip({branch: read[real] for branch, real in stored.items()}, depth_limit=1)


def _rename(branch: str, branch_magic: Mapping[str, str]) -> str:
    for substring, replacement in branch_magic.items():
        branch = branch.replace(substring, replacement)
    return branch


def _read_hdf5(
    path: Path, branches: list[str], load_range: tuple[float, float] | None
) -> ak.Array:
    """Top-level datasets; variable-length (vlen) datasets become jagged columns."""
    import awkward as ak
    import h5py

    with h5py.File(path, "r") as file:
        available = [name for name, item in file.items() if isinstance(item, h5py.Dataset)]
        _require(path, branches, available)
        start, stop = _entry_range(len(file[branches[0]]), load_range)
        columns = {}
        for name in branches:
            dataset = file[name]
            if h5py.check_vlen_dtype(dataset.dtype) is None:
                columns[name] = ak.from_numpy(dataset[start:stop])
                continue
            rows = dataset[start:stop]
            counts = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
            flat = (
                np.concatenate(rows)
                if len(rows)
                else np.empty(0, h5py.check_vlen_dtype(dataset.dtype))
            )
            columns[name] = ak.unflatten(flat, counts)
    return ak.zip(columns, depth_limit=1)
