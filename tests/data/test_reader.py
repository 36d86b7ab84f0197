"""Finding and reading dataset files, and every DataError a user can run into there."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainyard.data.reader import read_jet_table, resolve_files
from trainyard.datasets import schema
from trainyard.errors import DataError

SHARD_NAMES = [f"toy-s21-{i:04d}.parquet" for i in range(3)]


def test_glob_relative_to_base_dir(toy_dir: Path) -> None:
    files = resolve_files("toy-s21-*.parquet", base_dir=toy_dir)
    assert [f.name for f in files] == SHARD_NAMES
    assert all(f.is_absolute() for f in files)


def test_list_directory_and_duplicates(toy_dir: Path) -> None:
    files = resolve_files(
        [str(toy_dir / SHARD_NAMES[2]), toy_dir, "*-0000.parquet"], base_dir=toy_dir
    )
    assert [f.name for f in files] == [SHARD_NAMES[2], SHARD_NAMES[0], SHARD_NAMES[1]]


def test_recursive_glob_reads_each_file_once(toy_dir: Path, tmp_path: Path) -> None:
    nested = tmp_path / "runs" / "a"
    nested.mkdir(parents=True)
    (nested / "jets.parquet").write_bytes((toy_dir / SHARD_NAMES[1]).read_bytes())
    (tmp_path / "runs" / "latest").symlink_to(nested)
    files = resolve_files("**/*.parquet", base_dir=tmp_path)
    assert len(files) == 1
    assert files[0].resolve() == (nested / "jets.parquet").resolve()


def test_nothing_matching_names_pattern_directory_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        resolve_files(["missing-*.parquet"], base_dir=tmp_path)
    message = str(caught.value)
    assert "'missing-*.parquet'" in message
    assert f"resolved against {tmp_path}" in message
    assert "trainyard data generate toy" in message


def test_an_absolute_pattern_is_named_without_the_working_folder(tmp_path: Path) -> None:
    """The same message whichever folder the process runs in (a CLI's, or a server's)."""
    with pytest.raises(DataError) as caught:
        resolve_files([str(tmp_path / "missing-*.parquet")])
    assert f"(looked for {tmp_path / 'missing-*.parquet'});" in str(caught.value)
    assert "resolved against" not in str(caught.value)


def test_empty_pattern_list_is_an_error() -> None:
    with pytest.raises(DataError, match="trainyard data generate toy"):
        resolve_files([])


def test_reads_requested_columns_in_file_order(toy_dir: Path) -> None:
    files = resolve_files("*.parquet", base_dir=toy_dir)
    table = read_jet_table(files, [schema.JET_MASS, schema.LABEL])
    assert table.column_names == [schema.JET_MASS, schema.LABEL]
    assert table.num_rows == 500
    first = pq.read_table(files[0], columns=[schema.JET_MASS])
    assert table.column(schema.JET_MASS).to_pylist()[:200] == first.column(0).to_pylist()


def test_missing_column_lists_available_ones(toy_dir: Path) -> None:
    files = resolve_files("*.parquet", base_dir=toy_dir)
    with pytest.raises(DataError) as caught:
        read_jet_table(files, [schema.JET_PT, "part_charge"])
    message = str(caught.value)
    assert str(files[0]) in message
    assert "['part_charge']" in message
    assert "available columns" in message
    assert schema.PART_DPHI in message


def test_corrupt_file_is_named(toy_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet at all" * 10)
    files = [toy_dir / SHARD_NAMES[0], broken]
    with pytest.raises(DataError) as caught:
        read_jet_table(files, [schema.JET_PT])
    message = str(caught.value)
    assert str(broken) in message
    assert "corrupt or truncated" in message
    assert "regenerate" in message


def test_truncated_file_is_named(toy_dir: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes((toy_dir / SHARD_NAMES[0]).read_bytes()[:5000])
    with pytest.raises(DataError, match=r"truncated\.parquet"):
        read_jet_table([truncated], [schema.JET_PT])


def test_differing_schemas_name_both_files(toy_dir: Path, tmp_path: Path) -> None:
    good = toy_dir / SHARD_NAMES[0]
    table = pq.read_table(good)
    index = table.schema.get_field_index(schema.PART_PX)
    widened = table.set_column(
        index, schema.PART_PX, table.column(schema.PART_PX).cast(pa.list_(pa.float64()))
    )
    odd = tmp_path / "double-precision.parquet"
    pq.write_table(widened, odd)
    with pytest.raises(DataError) as caught:
        read_jet_table([good, odd], [schema.PART_PX, schema.LABEL])
    message = str(caught.value)
    assert str(good) in message
    assert str(odd) in message
    assert "part_px" in message
    assert "double" in message


def test_glob_characters_in_base_dir_are_literal(toy_dir: Path, tmp_path: Path) -> None:
    odd_dir = tmp_path / "run[1]"
    odd_dir.mkdir()
    (odd_dir / "jets.parquet").write_bytes((toy_dir / SHARD_NAMES[0]).read_bytes())
    assert resolve_files("*.parquet", base_dir=odd_dir) == [odd_dir / "jets.parquet"]
    assert resolve_files(odd_dir / "jets.parquet") == [odd_dir / "jets.parquet"]


def test_a_folder_of_other_files_names_what_it_holds_and_the_formats_read(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    for name in ("a.csv", "b.csv", "c.csv", "notes.txt"):
        (folder / name).write_text("jet_pt,label\n600,1\n")
    for entry in ("csv", "csv/*.parquet"):
        with pytest.raises(DataError) as caught:
            resolve_files(entry, base_dir=tmp_path)
        message = str(caught.value)
        assert f"no dataset file matches {entry!r}" in message
        assert f"{folder} holds 3 .csv files, 1 .txt file." in message
        assert "reads Parquet (.parquet), ROOT (.root) and HDF5 (.h5, .hdf5) files" in message
        assert "convert yours to one of those" in message


def test_a_folder_of_root_files_is_not_read_whole(tmp_path: Path) -> None:
    """A folder stands for its Parquet files (the built-in inputs read only Parquet)."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "jets.root").write_bytes(b"")
    with pytest.raises(DataError) as caught:
        resolve_files("root", base_dir=tmp_path)
    assert "holds 1 .root file." in str(caught.value)
    assert "(a folder for its .parquet files)" in str(caught.value)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        resolve_files("nowhere/train/*.parquet", base_dir=tmp_path)
    assert f"{tmp_path} holds no files." in str(caught.value)
