"""weaver-core reads our generated files as it reads plain jagged arrays: through its compiled
padding kernels, never its per-jet Python loop (about 1 s per 1,000 jets per wrap-padded
variable in weaver-core 0.5.3), and into the same arrays.

weaver-core decides per column: ``tools._get_content_and_offsets`` unpacks a plain list column
into flat values and offsets for the kernels, and returns None for an option-typed one, which
sends it down the slow path. The tests count those decisions instead of timing the read.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from weaver.utils import dataset as weaver_dataset
from weaver.utils.data import config as weaver_config
from weaver.utils.data import fileio as weaver_fileio
from weaver.utils.data import tools as weaver_tools

from tests.data import config_files
from tests.data.test_readers import write_root
from tests.datasets.layout import constituent_types, nullable_parts
from trainyard.datasets import schema
from trainyard.datasets.toy import write_toy_dataset

TEST_MODE = {"training": False, "shuffle": False, "reweight": False, "mode": None}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), num_jets=300, seed=3)[0]


@pytest.fixture
def unpacked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """One entry per column weaver-core tries to unpack: True when its kernels can take it."""
    decisions: list[bool] = []
    original = weaver_tools._get_content_and_offsets

    def counting(array: object) -> object:
        found = original(array)
        decisions.append(found is not None)
        return found

    monkeypatch.setattr(weaver_tools, "_get_content_and_offsets", counting)
    monkeypatch.setattr(weaver_dataset, "_get_content_and_offsets", counting)
    yield decisions


def _weaver_arrays(path: Path, treename: str | None = None) -> dict[str, np.ndarray]:
    config = weaver_config.DataConfig.load(str(config_files.WRAP), load_reweight_info=False)
    table = weaver_fileio._read_files([str(path)], config.test_load_branches, treename=treename)
    arrays, _ = weaver_dataset._preprocess(table, config, TEST_MODE)
    return {name: np.asarray(array) for name, array in arrays.items()}


def test_generated_files_declare_nothing_nullable(generated: Path) -> None:
    assert nullable_parts(generated) == []
    assert constituent_types(generated) == {"var * float32"}


def test_weaver_reads_each_constituent_column_as_flat_values(
    generated: Path, unpacked: list[bool]
) -> None:
    table = weaver_fileio._read_files([str(generated)], list(schema.PARTICLE_COLUMNS))
    stored = pq.read_table(generated)
    for name in schema.PARTICLE_COLUMNS:
        found = weaver_tools._get_content_and_offsets(table[name])
        assert found is not None, f"weaver-core would pad {name} with its per-jet loop"
        values, offsets = found
        column = stored.column(name).combine_chunks()
        np.testing.assert_array_equal(values, pc.list_flatten(column).to_numpy())
        np.testing.assert_array_equal(np.diff(offsets), pc.list_value_length(column).to_numpy())
    assert unpacked == [True] * len(schema.PARTICLE_COLUMNS)


def test_weaver_pads_our_parquet_as_it_pads_a_plain_root_copy(
    generated: Path, tmp_path: Path, unpacked: list[bool]
) -> None:
    """The wrap config pads nine variables (seven of them wrapped) per jet."""
    ours = _weaver_arrays(generated)
    from_parquet = list(unpacked)
    unpacked.clear()
    plain = _weaver_arrays(write_root(tmp_path / "plain.root", pq.read_table(generated)), "Events")
    assert from_parquet.count(False) == unpacked.count(False)
    assert from_parquet.count(True) == unpacked.count(True) > 0
    assert sorted(ours) == sorted(plain)
    for name, array in plain.items():
        np.testing.assert_array_equal(ours[name], array, err_msg=name)
