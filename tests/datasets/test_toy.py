"""The toy generator: deterministic, in the shared schema, and physically plausible."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.datasets.layout import constituent_types, nullable_parts
from trainyard.datasets import schema
from trainyard.datasets.toy import generate_toy_jets, write_toy_dataset
from trainyard.errors import ConfigError


@pytest.fixture(scope="module")
def jets() -> pa.Table:
    return generate_toy_jets(4000, seed=11)


def _flat(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().flatten().to_numpy()


def _scalar(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def test_same_seed_gives_identical_table() -> None:
    assert generate_toy_jets(300, seed=3).equals(generate_toy_jets(300, seed=3))
    assert not generate_toy_jets(300, seed=3).equals(generate_toy_jets(300, seed=4))


def test_table_has_the_shared_schema(jets: pa.Table) -> None:
    assert jets.schema.equals(schema.jet_schema())
    assert tuple(jets.column_names) == schema.ALL_COLUMNS
    assert jets.schema.field(schema.LABEL).type == pa.int64()
    assert jets.schema.field(schema.JET_NPARTICLES).type == pa.int32()
    assert jets.schema.field(schema.PART_PX).type == schema.PARTICLE_LIST_TYPE


def test_constituents_are_sorted_capped_and_counted(jets: pa.Table) -> None:
    px = jets.column(schema.PART_PX).combine_chunks()
    counts = np.diff(px.offsets.to_numpy())
    np.testing.assert_array_equal(counts, _scalar(jets, schema.JET_NPARTICLES))
    assert counts.min() >= 1
    assert counts.max() <= schema.MAX_CONSTITUENTS
    pt = np.hypot(_flat(jets, schema.PART_PX), _flat(jets, schema.PART_PY))
    same_jet = np.repeat(np.arange(len(counts)), counts)
    falling = np.diff(pt) <= 1e-4 * pt[1:]
    assert falling[np.diff(same_jet) == 0].all()


def test_jet_columns_are_the_constituent_sum(jets: pa.Table) -> None:
    counts = _scalar(jets, schema.JET_NPARTICLES)
    jet_index = np.repeat(np.arange(len(counts)), counts)

    def summed(name: str) -> np.ndarray:
        return np.bincount(jet_index, _flat(jets, name).astype(np.float64))

    px, py, pz, energy = (
        summed(n) for n in (schema.PART_PX, schema.PART_PY, schema.PART_PZ, schema.PART_ENERGY)
    )
    pt = np.hypot(px, py)
    mass = np.sqrt(np.maximum(energy**2 - pt**2 - pz**2, 0.0))
    np.testing.assert_allclose(_scalar(jets, schema.JET_PT), pt, rtol=1e-4)
    np.testing.assert_allclose(_scalar(jets, schema.JET_ENERGY), energy, rtol=1e-4)
    np.testing.assert_allclose(_scalar(jets, schema.JET_MASS), mass, rtol=1e-3, atol=0.05)
    np.testing.assert_allclose(_scalar(jets, schema.JET_PHI), np.arctan2(py, px), atol=1e-4)

    particle_eta = np.arcsinh(
        _flat(jets, schema.PART_PZ)
        / np.hypot(_flat(jets, schema.PART_PX), _flat(jets, schema.PART_PY))
    )
    np.testing.assert_allclose(
        _flat(jets, schema.PART_DETA),
        particle_eta - _scalar(jets, schema.JET_ETA)[jet_index],
        atol=1e-3,
    )
    dphi = _flat(jets, schema.PART_DPHI)
    assert dphi.min() >= -np.pi
    assert dphi.max() < np.pi
    assert np.hypot(_flat(jets, schema.PART_DETA), dphi).max() < 1.0


def test_physics_is_plausible(jets: pa.Table) -> None:
    is_top = _scalar(jets, schema.LABEL) == schema.LABEL_TOP
    mass = _scalar(jets, schema.JET_MASS)
    multiplicity = _scalar(jets, schema.JET_NPARTICLES)
    jet_pt = _scalar(jets, schema.JET_PT)
    assert 0.4 < is_top.mean() < 0.6
    assert 150.0 < mass[is_top].mean() < 200.0
    assert 150.0 < np.median(mass[is_top]) < 185.0
    assert mass[~is_top].mean() < 0.65 * mass[is_top].mean()
    assert multiplicity[is_top].mean() > multiplicity[~is_top].mean() + 10
    assert 30 < multiplicity[~is_top].mean() < 50
    assert jet_pt.min() >= 549.99
    assert jet_pt.max() <= 650.01
    assert np.abs(_scalar(jets, schema.JET_ETA)).max() <= 2.0


def test_mass_separates_but_not_perfectly(jets: pa.Table) -> None:
    is_top = _scalar(jets, schema.LABEL) == schema.LABEL_TOP
    mass = _scalar(jets, schema.JET_MASS)
    # ROC AUC of the mass alone = P(top mass > QCD mass), estimated from ranks.
    ranks = np.argsort(np.argsort(mass)) + 1
    num_top, num_qcd = is_top.sum(), (~is_top).sum()
    auc = (ranks[is_top].sum() - num_top * (num_top + 1) / 2) / (num_top * num_qcd)
    assert 0.8 < auc < 0.93


def test_signal_fraction_is_respected() -> None:
    labels = _scalar(generate_toy_jets(200, seed=1, signal_fraction=0.0), schema.LABEL)
    assert (labels == schema.LABEL_QCD).all()
    labels = _scalar(generate_toy_jets(200, seed=1, signal_fraction=1.0), schema.LABEL)
    assert (labels == schema.LABEL_TOP).all()


def test_write_toy_dataset_shards_and_metadata(tmp_path: Path) -> None:
    paths = write_toy_dataset(tmp_path / "toy", num_jets=250, seed=5, jets_per_shard=100)
    assert [p.name for p in paths] == [f"toy-s5-{i:04d}.parquet" for i in range(3)]
    tables = [pq.read_table(p) for p in paths]
    assert [t.num_rows for t in tables] == [100, 100, 50]
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [p.name for p in paths]
    provenance = json.loads(tables[2].schema.metadata[schema.METADATA_KEY])
    assert provenance["generator"] == "toy"
    assert provenance["seed"] == 5
    assert provenance["shard_index"] == 2
    assert provenance["num_jets"] == 50
    assert provenance["settings"]["jet_pt_min"] == 550.0
    assert tables[0].schema.remove_metadata().equals(schema.jet_schema())
    assert nullable_parts(paths[0]) == []  # weaver-core pads plain lists with compiled code
    assert constituent_types(paths[0]) == {"var * float32"}

    again = write_toy_dataset(tmp_path / "again", num_jets=250, seed=5, jets_per_shard=100)
    for first, second in zip(paths, again, strict=True):
        assert pq.read_table(first).equals(pq.read_table(second))


def test_rewriting_with_fewer_shards_removes_stale_ones(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path, num_jets=30, seed=2, jets_per_shard=10)
    write_toy_dataset(tmp_path, num_jets=30, seed=8, jets_per_shard=10)
    write_toy_dataset(tmp_path, num_jets=15, seed=2, jets_per_shard=10)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if n.startswith("toy-s2-")] == [
        "toy-s2-0000.parquet",
        "toy-s2-0001.parquet",
    ]
    assert len([n for n in names if n.startswith("toy-s8-")]) == 3


def test_impossible_request_is_rejected_with_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_toy_dataset(tmp_path, num_jets=0, seed=1, jets_per_shard=0, signal_fraction=1.5)
    message = str(caught.value)
    assert "num_jets must be at least 1, got 0" in message
    assert "jets_per_shard must be at least 1, got 0" in message
    assert "signal_fraction must lie in [0, 1], got 1.5" in message
    assert not any(tmp_path.iterdir())
