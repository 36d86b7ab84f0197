"""Find jet-dataset files and read them into one Arrow table, with errors a user can act on.

Everything that can go wrong with input files (nothing matches, a corrupt shard, a missing
column, shards written with different layouts) is reported here as a DataError that names the
file, so the training code can assume a clean table.
"""

import glob
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trainyard.errors import DataError

_GLOB_CHARACTERS = frozenset("*?[")
_GENERATE_HINT = "create a dataset with `trainyard data generate toy` or fix the path"


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
        raise DataError(
            f"no dataset file matches {entry!r} (resolved against {root}, looked for {full}); "
            f"{_GENERATE_HINT}"
        )
    return matches


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
    """Read the data pages, which can be damaged even when the footer is intact."""
    try:
        return pq.read_table(path, columns=columns).replace_schema_metadata(None)
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
