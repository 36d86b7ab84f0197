"""Reading Parquet, ROOT and HDF5 files: the same arrays, and every error names the file."""

import logging
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import uproot

from trainyard.data.reader import MissingBranchesError, read_branches
from trainyard.datasets import schema
from trainyard.errors import DataError

SHARDS = [f"toy-s21-{i:04d}.parquet" for i in range(3)]
BRANCHES = [schema.PART_PX, schema.PART_DETA, schema.JET_PT, schema.LABEL]


def plain_columns(table: pa.Table) -> dict[str, ak.Array]:
    """The table's columns as awkward arrays without option types, as ROOT and HDF5 hold them."""
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type):
            values = pc.list_flatten(column).to_numpy()
            columns[name] = ak.unflatten(values, pc.list_value_length(column).to_numpy())
        else:
            columns[name] = ak.Array(column.to_numpy())
    return columns


def write_root(
    path: Path, table: pa.Table, treename: str = "Events", *, rntuple: bool = False
) -> Path:
    """A ROOT file with one TTree (or RNTuple) holding the table's columns."""
    columns = plain_columns(table)
    with uproot.recreate(path) as file:
        if rntuple:
            file[treename] = columns
        else:
            tree = file.mktree(treename, {name: column.type for name, column in columns.items()})
            tree.extend(columns)
    return path


def write_hdf5(path: Path, table: pa.Table) -> Path:
    """An HDF5 file with one top-level dataset per column; list columns as vlen datasets."""
    with h5py.File(path, "w") as file:
        for name, column in plain_columns(table).items():
            if column.ndim == 1:
                file.create_dataset(name, data=ak.to_numpy(column))
                continue
            rows = [np.asarray(row, dtype=np.float32) for row in ak.to_list(column)]
            dataset = file.create_dataset(name, (len(rows),), dtype=h5py.vlen_dtype(np.float32))
            dataset[:] = rows
    return path


def _same(left: ak.Array, right: ak.Array) -> bool:
    return ak.to_list(left) == ak.to_list(right)


@pytest.fixture(scope="module")
def shard_table(toy_dir: Path) -> pa.Table:
    return pq.read_table(toy_dir / SHARDS[0])


def test_root_ttree_and_rntuple_read_like_parquet(
    toy_dir: Path, shard_table: pa.Table, tmp_path: Path
) -> None:
    parquet = read_branches([toy_dir / SHARDS[0]], BRANCHES)
    tree = read_branches([write_root(tmp_path / "tree.root", shard_table)], BRANCHES)
    rntuple = write_root(tmp_path / "rntuple.root", shard_table, rntuple=True)
    assert parquet.fields == BRANCHES
    assert _same(tree, parquet)
    assert _same(read_branches([rntuple], BRANCHES), parquet)


def test_hdf5_vlen_datasets_read_like_parquet(
    toy_dir: Path, shard_table: pa.Table, tmp_path: Path
) -> None:
    path = write_hdf5(tmp_path / "jets.h5", shard_table)
    assert _same(read_branches([path], BRANCHES), read_branches([toy_dir / SHARDS[0]], BRANCHES))


def test_treename_is_needed_when_a_file_holds_several(
    shard_table: pa.Table, tmp_path: Path
) -> None:
    path = write_root(tmp_path / "two.root", shard_table, "Jets")
    with uproot.update(path) as file:
        file.mktree("Other", {"x": np.float32}).extend({"x": np.zeros(3, np.float32)})
    with pytest.raises(DataError) as caught:
        read_branches([path], BRANCHES)
    assert str(path) in str(caught.value)
    assert "['Jets', 'Other']" in str(caught.value)
    assert "treename" in str(caught.value)
    assert len(read_branches([path], BRANCHES, treename="Jets")) == shard_table.num_rows
    with pytest.raises(DataError, match="has no tree 'Events'; its trees are"):
        read_branches([path], BRANCHES, treename="Events")


def test_load_range_reads_weavers_rows(toy_dir: Path) -> None:
    files = [toy_dir / name for name in SHARDS]  # 200, 200 and 100 jets
    assert len(read_branches(files, BRANCHES, load_range=(0, 0.5))) == 100 + 100 + 50
    assert len(read_branches(files[:1], BRANCHES, load_range=(0, 0.001))) == 1
    full = read_branches(files[:1], BRANCHES)
    assert _same(read_branches(files[:1], BRANCHES, load_range=(0.5, 1)), full[100:])


def test_missing_branch_lists_available_and_suggests(toy_dir: Path) -> None:
    with pytest.raises(MissingBranchesError) as caught:
        read_branches([toy_dir / SHARDS[0]], ["part_detaa", schema.JET_PT])
    message = str(caught.value)
    assert str(toy_dir / SHARDS[0]) in message
    assert "['part_detaa']" in message
    assert "did you mean 'part_deta'?" in message
    assert schema.PART_DPHI in message
    assert caught.value.missing == ["part_detaa"]


def test_differing_types_name_both_files(
    toy_dir: Path, shard_table: pa.Table, tmp_path: Path
) -> None:
    as_double = pa.list_(pa.float64())
    column = shard_table.column(schema.PART_PX).cast(as_double)
    changed = shard_table.set_column(0, pa.field(schema.PART_PX, as_double), column)
    other = tmp_path / "double.parquet"
    pq.write_table(changed, other)
    with pytest.raises(DataError) as caught:
        read_branches([toy_dir / SHARDS[0], other], BRANCHES)
    message = str(caught.value)
    assert str(toy_dir / SHARDS[0]) in message
    assert str(other) in message
    assert "'part_px' is var * float32" in message
    assert "var * float64" in message


def test_branch_missing_from_a_later_file_names_both_files(
    toy_dir: Path, shard_table: pa.Table, tmp_path: Path
) -> None:
    other = tmp_path / "no_deta.parquet"
    pq.write_table(shard_table.drop_columns([schema.PART_DETA]), other)
    with pytest.raises(DataError) as caught:
        read_branches([toy_dir / SHARDS[0], other], BRANCHES)
    message = str(caught.value)
    assert "different schemas" in message
    assert str(toy_dir / SHARDS[0]) in message
    assert f"{other} lacks branch(es) ['part_deta']" in message


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.mark.parametrize("kind", ["parquet", "root", "h5"])
def test_truncated_file_stops_the_read_or_is_skipped(
    kind: str,
    toy_dir: Path,
    shard_table: pa.Table,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = {
        "parquet": toy_dir / SHARDS[1],
        "root": write_root(tmp_path / "good.root", shard_table),
        "h5": write_hdf5(tmp_path / "good.h5", shard_table),
    }[kind]
    bad = _truncated(good, tmp_path / f"bad.{kind}")
    with pytest.raises(DataError) as caught:
        read_branches([good, bad], BRANCHES)
    assert f"{bad} could not be read" in str(caught.value)
    assert "skip_bad_files=True" in str(caught.value)

    with caplog.at_level(logging.WARNING, logger="trainyard.data.reader"):
        events = read_branches([bad, good], BRANCHES, skip_bad_files=True)
    assert len(events) == len(read_branches([good], BRANCHES))
    assert f"skipping unreadable file {bad}" in caplog.text
    assert "skipped 1 unreadable file(s)" in caplog.text


def test_only_bad_files_is_an_error(toy_dir: Path, tmp_path: Path) -> None:
    bad = _truncated(toy_dir / SHARDS[0], tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"none of the 1 file\(s\) could be read"):
        read_branches([bad], BRANCHES, skip_bad_files=True)


def test_unsupported_extension_is_named(tmp_path: Path) -> None:
    path = tmp_path / "jets.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataError, match=r"jets.csv has extension '.csv'; trainyard reads"):
        read_branches([path], BRANCHES)


def test_file_magic_and_branch_magic(toy_dir: Path, shard_table: pa.Table, tmp_path: Path) -> None:
    events = read_branches(
        [toy_dir / SHARDS[0], toy_dir / SHARDS[2]],
        [schema.JET_PT],
        file_magic={"sample": [(r"-0002\.parquet$", 7.0), ("toy", 3.0)]},
    )
    assert np.array_equal(np.unique(ak.to_numpy(events["sample"][:200])), [3.0])
    assert np.array_equal(np.unique(ak.to_numpy(events["sample"][200:])), [7.0])

    path = write_root(
        tmp_path / "renamed.root",
        shard_table.rename_columns(
            [name.replace("jet_", "fj_") for name in shard_table.column_names]
        ),
    )
    renamed = read_branches([path], [schema.JET_PT], branch_magic={"jet_": "fj_"})
    assert renamed.fields == [schema.JET_PT]
    assert np.array_equal(
        ak.to_numpy(renamed[schema.JET_PT]), shard_table.column("jet_pt").to_numpy()
    )
