"""The Pythia 8 top-tagging generator: physics on a small sample, shards, resume, errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.datasets.layout import constituent_types, nullable_parts
from trainyard.datasets import schema
from trainyard.datasets.parallel import write_shards
from trainyard.datasets.pythia import TopTaggingSettings, pythia_seed
from trainyard.datasets.top_tagging import plan_top_tagging_dataset
from trainyard.errors import ConfigError, DataError

NUM_JETS = 240
JETS_PER_SHARD = 120


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of 120 jets, made by two worker processes."""
    out_dir = tmp_path_factory.mktemp("top-tagging")
    plan = plan_top_tagging_dataset(
        out_dir, num_jets=NUM_JETS, seed=1, jets_per_shard=JETS_PER_SHARD
    )
    reported = []
    write_shards(plan, num_workers=2, report=reported.append)
    assert sum(reported) == NUM_JETS
    return out_dir


@pytest.fixture(scope="module")
def jets(sample_dir: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(sample_dir.glob("*.parquet")))


def _flat(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().flatten().to_numpy()


def _scalar(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def test_shards_have_the_shared_schema_and_balanced_labels(sample_dir: Path) -> None:
    paths = sorted(sample_dir.iterdir())
    assert [p.name for p in paths] == ["top-tagging-0000.parquet", "top-tagging-0001.parquet"]
    for path in paths:
        table = pq.read_table(path)
        assert table.schema.remove_metadata().equals(schema.jet_schema())
        assert nullable_parts(path) == []  # weaver-core pads plain lists with compiled code
        assert constituent_types(path) == {"var * float32"}
        assert table.num_rows == JETS_PER_SHARD
        labels = _scalar(table, schema.LABEL)
        assert (labels == schema.LABEL_TOP).sum() == JETS_PER_SHARD // 2
        assert 0 < labels[: JETS_PER_SHARD // 2].mean() < 1, "rows are shuffled"


def test_jets_are_in_the_window_and_sum_their_constituents(jets: pa.Table) -> None:
    jet_pt = _scalar(jets, schema.JET_PT)
    assert jet_pt.min() > 549.9
    assert jet_pt.max() < 650.1
    assert np.abs(_scalar(jets, schema.JET_ETA)).max() < 2.0
    counts = _scalar(jets, schema.JET_NPARTICLES)
    assert counts.max() <= schema.MAX_CONSTITUENTS
    jet_index = np.repeat(np.arange(len(counts)), counts)
    px, py, pz, energy = (
        np.bincount(jet_index, _flat(jets, name).astype(np.float64))
        for name in (schema.PART_PX, schema.PART_PY, schema.PART_PZ, schema.PART_ENERGY)
    )
    mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    np.testing.assert_allclose(_scalar(jets, schema.JET_PT), np.hypot(px, py), rtol=1e-4)
    np.testing.assert_allclose(_scalar(jets, schema.JET_MASS), mass, rtol=1e-3, atol=0.1)
    pt = np.hypot(_flat(jets, schema.PART_PX), _flat(jets, schema.PART_PY))
    falling = np.diff(pt) <= 1e-4 * pt[1:]
    assert falling[np.diff(jet_index) == 0].all()
    # anti-kT works in rapidity; a few soft massive hadrons sit far off in pseudorapidity.
    distance = np.hypot(_flat(jets, schema.PART_DETA), _flat(jets, schema.PART_DPHI))
    assert np.quantile(distance, 0.99) < 0.8


def test_top_jets_look_like_tops_and_qcd_jets_do_not(jets: pa.Table) -> None:
    is_top = _scalar(jets, schema.LABEL) == schema.LABEL_TOP
    mass = _scalar(jets, schema.JET_MASS)
    multiplicity = _scalar(jets, schema.JET_NPARTICLES)
    assert 160.0 < np.median(mass[is_top]) < 190.0
    assert mass[~is_top].mean() < 0.65 * np.median(mass[is_top])
    assert multiplicity[is_top].mean() > multiplicity[~is_top].mean() + 5


def test_shard_metadata_records_how_it_was_made(sample_dir: Path) -> None:
    stored = [
        json.loads(pq.read_schema(path).metadata[schema.METADATA_KEY])
        for path in sorted(sample_dir.glob("*.parquet"))
    ]
    first = stored[0]
    assert first["generator"] == "pythia8-top-tagging"
    assert first["seed"] == 1
    assert first["versions"]["pythia8mc"] == "8.317.2"
    assert first["settings"]["jet_radius"] == 0.8
    assert (first["settings"]["jet_pt_min"], first["settings"]["jet_pt_max"]) == (550.0, 650.0)
    assert "24:onIfAny = 1 2 3 4 5" in first["pythia"]["signal"]
    assert "HardQCD:all = on" in first["pythia"]["background"]
    assert "PartonLevel:MPI = off" in first["pythia"]["background"]
    assert [s["shard"]["index"] for s in stored] == [0, 1]
    seeds = [seed for s in stored for seed in s["shard"]["pythia_seeds"].values()]
    assert len(set(seeds)) == 4
    assert all(1 <= seed <= 900_000_000 for seed in seeds)
    assert {key: value for key, value in stored[1].items() if key != "shard"} == {
        key: value for key, value in first.items() if key != "shard"
    }


def test_pythia_seeds_depend_on_seed_shard_and_process() -> None:
    assert pythia_seed(1, 0, "signal") == pythia_seed(1, 0, "signal")
    seeds = {
        pythia_seed(s, i, p) for s in (1, 2) for i in range(3) for p in ("signal", "background")
    }
    assert len(seeds) == 12


def test_rerun_with_other_settings_is_refused(sample_dir: Path) -> None:
    with pytest.raises(DataError) as caught:
        plan_top_tagging_dataset(
            sample_dir,
            num_jets=NUM_JETS,
            seed=2,
            jets_per_shard=JETS_PER_SHARD,
            settings=TopTaggingSettings(mpi=True),
        )
    message = str(caught.value)
    assert "top-tagging-0000.parquet was made with other settings" in message
    assert "seed: 1 there, 2 now" in message
    assert "settings.mpi: false there, true now" in message
    assert "['PartonLevel:MPI = off'] there, ['PartonLevel:MPI = on'] now" in message
    assert "choose another --out folder" in message


def test_failing_pythia_init_is_a_clear_error(tmp_path: Path) -> None:
    bad = TopTaggingSettings(extra_pythia=("Beams:idA = 12345",))
    with pytest.raises(DataError) as caught:
        plan_top_tagging_dataset(tmp_path, num_jets=10, seed=1, settings=bad)
    message = str(caught.value)
    assert "Pythia's init() failed for the signal process" in message
    assert "cannot handle this beam combination" in message
    assert "Beams:idA = 12345" in message
    assert not any(tmp_path.iterdir())


def test_unknown_pythia_setting_is_named(tmp_path: Path) -> None:
    bad = TopTaggingSettings(extra_pythia=("Top:ggtottbar = on",))
    with pytest.raises(DataError, match=r"rejected the setting\(s\) \['Top:ggtottbar = on'\]"):
        plan_top_tagging_dataset(tmp_path, num_jets=10, seed=1, settings=bad)


def test_impossible_request_is_rejected_with_every_problem(tmp_path: Path) -> None:
    settings = TopTaggingSettings(jet_pt_min=700.0, jet_pt_max=600.0)
    with pytest.raises(ConfigError) as caught:
        plan_top_tagging_dataset(
            tmp_path, num_jets=0, seed=1, jets_per_shard=0, signal_fraction=2.0, settings=settings
        )
    message = str(caught.value)
    assert "num_jets (--jets) must be at least 1, got 0" in message
    assert "jets_per_shard (--jets-per-shard) must be at least 1, got 0" in message
    assert "signal_fraction (--signal-fraction) must lie in [0, 1], got 2.0" in message
    assert "the jet pT window must satisfy 0 <= min < max, got 700.0-600.0" in message


def test_rerun_makes_only_the_missing_shard_and_refuses_a_mix(tmp_path: Path) -> None:
    out_dir = tmp_path / "d"
    command = [sys.executable, "-c", "from trainyard.cli.app import main; main()"]
    args = ["data", "generate", "top-tagging", "--jets", "6", "--jets-per-shard", "2"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args, "--out", str(out_dir), *extra],
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
            capture_output=True,
            text=True,
            check=False,
        )

    first = run("--workers", "2")
    assert first.returncode == 0, first.stderr
    assert "made 6 jets in 3 shard(s)" in first.stdout
    paths = sorted(out_dir.iterdir())
    assert [p.name for p in paths] == [f"top-tagging-{i:04d}.parquet" for i in range(3)]
    first_tables = [pq.read_table(path) for path in paths]
    paths[1].unlink()
    mtimes = [path.stat().st_mtime_ns for path in (paths[0], paths[2])]

    second = run()
    assert second.returncode == 0, second.stderr
    assert "2 of 3 shard(s) already done; making 1 with 1 worker(s)" in second.stdout
    assert "made 2 jets in 1 shard(s)" in second.stdout
    assert [path.stat().st_mtime_ns for path in (paths[0], paths[2])] == mtimes
    assert pq.read_table(paths[1]).equals(first_tables[1]), "same seed, same shard"

    third = run()
    assert "already holds all 6 jets (3 shard(s)); nothing to do" in third.stdout
    mixed = run("--mpi")
    assert mixed.returncode == 2
    assert "settings.mpi: false there, true now" in mixed.stderr
    assert "Traceback" not in mixed.stderr
