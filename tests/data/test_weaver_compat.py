"""weaver-core's own data loader, on our files with the example data config, yields the
built-in inputs: a weaver user and a trainyard user train on the same arrays. So does the
config ``builtin_weaver_config`` gives, which describes the built-in inputs in exported
models' preprocess.json, and the ParT example config yields the built-in Lorentz vectors.

The configs pad with zeros (``constant``), as the built-in inputs do, so padded slots
compare too. weaver-core is a test dependency, imported directly: without it this fails.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from weaver.utils.dataset import SimpleIterDataset

from tests.data import config_files
from trainyard.data.features import (
    build_particlenet_inputs,
    builtin_weaver_config,
    load_jet_arrays,
)
from trainyard.data.weaver.writer import write_weaver_config
from trainyard.datasets import schema

MAX_PARTICLES = 128


def _weaver_samples(shard: Path, config: Path) -> list:
    dataset = SimpleIterDataset(
        {"toy": [str(shard)]},
        str(config),
        for_training=False,
        load_range_and_fraction=((0, 1), 1, 1),
        fetch_by_files=True,
        fetch_step=1,
        name="compat",
    )
    return list(dataset)


@pytest.mark.parametrize("config", ["example", "builtin"])
def test_weaver_reads_our_files_into_the_builtin_inputs(
    config: str, toy_dir: Path, tmp_path: Path
) -> None:
    shard = toy_dir / "toy-s21-0002.parquet"
    if config == "example":
        config_path, top_class = config_files.EXAMPLE, 0  # labels [is_top, is_qcd]
    else:
        # jet_mass observed, to find each jet again below.
        builtin = replace(builtin_weaver_config(MAX_PARTICLES), observers=("jet_mass",))
        config_path, top_class = write_weaver_config(builtin, tmp_path / "builtin.yaml"), 1
    samples = _weaver_samples(shard, config_path)
    ours = load_jet_arrays(str(shard), max_particles=MAX_PARTICLES)
    assert len(samples) == len(ours)

    # weaver may reorder jets; jet masses are distinct, so they identify each jet.
    our_mass = pq.read_table(shard, columns=[schema.JET_MASS]).column(0).to_numpy()
    for inputs, labels, observers in samples:
        jet = int(np.argmin(np.abs(our_mass - observers["jet_mass"])))
        np.testing.assert_array_equal(inputs["pf_features"], ours.features_NCP[jet])
        np.testing.assert_array_equal(inputs["pf_points"], ours.points_NCP[jet])
        np.testing.assert_array_equal(inputs["pf_mask"], ours.mask_N1P[jet])
        assert (labels["_label_"] == top_class) == (ours.labels_N[jet] == 1)


def test_weaver_reads_the_part_example_into_the_builtin_vectors(toy_dir: Path) -> None:
    shard = toy_dir / "toy-s21-0002.parquet"
    samples = _weaver_samples(shard, config_files.PART_EXAMPLE)
    table = pq.read_table(shard)
    ours = build_particlenet_inputs(table, max_particles=MAX_PARTICLES, vectors=True)
    assert ours.vectors_N4P is not None and len(samples) == len(ours)
    our_mass = table.column(schema.JET_MASS).to_numpy()
    for inputs, _, observers in samples:
        jet = int(np.argmin(np.abs(our_mass - observers["jet_mass"])))
        np.testing.assert_array_equal(inputs["pf_vectors"], ours.vectors_N4P[jet])
        np.testing.assert_array_equal(inputs["pf_features"], ours.features_NCP[jet])
        np.testing.assert_array_equal(inputs["pf_mask"], ours.mask_N1P[jet])
