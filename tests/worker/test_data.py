"""The worker's data step: staged once into the cache, reused, mapped onto the model's inputs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainyard.config import parse_experiment
from trainyard.config.schema import DataSpec
from trainyard.datasets.toy import write_toy_dataset
from trainyard.metrics import ClassLabels
from trainyard.models import input_roles
from trainyard.worker.data import TrialData, load_trial_data
from trainyard.worker.distributed import World

WEAVER_CONFIG = Path(__file__).parents[1] / "data" / "configs" / "jets-wrap.yaml"
PART_CONFIG = Path(__file__).parents[2] / "examples" / "configs" / "part-inputs.yaml"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("worker-data")
    write_toy_dataset(root / "train", num_jets=300, seed=5, jets_per_shard=200)
    write_toy_dataset(root / "val", num_jets=101, seed=6)
    return root


def _data(toy: Path, **keys: Any) -> DataSpec:
    raw = {
        "name": "d",
        "model": "mlp",
        "data": {"train": str(toy / "train/*.parquet"), "val": str(toy / "val/*.parquet"), **keys},
        "training": {"max_length": {"epochs": 1}},
    }
    return parse_experiment(raw).data


def _load(data: DataSpec, cache: Path, world: World = World(), **settings: Any) -> TrialData:
    options: dict[str, Any] = {
        "staging_dir": cache,
        "batch_size": 16,
        "seed": 1,
        "world": world,
        "device": torch.device("cpu"),
        "on_progress": lambda: None,
        **settings,
    }
    return load_trial_data(data, **options)


def _staged_folders(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith("."))


def test_builtin_inputs_are_staged_once_and_reused(toy: Path, tmp_path: Path, caplog) -> None:
    beats: list[int] = []
    caplog.set_level("INFO", logger="trainyard.worker.data")
    first = _load(_data(toy, max_particles=24), tmp_path, on_progress=lambda: beats.append(1))
    assert beats, "staging beats the heartbeat after each file"
    assert "staging training data from 2 file(s)" in caplog.text
    assert (first.train.num_jets, first.val.num_jets) == (300, 101)
    assert (first.inputs.num_features, first.inputs.num_classes) == (7, 2)
    assert first.inputs.signal_class == first.val_shard.signal_class == 1
    batch = next(iter(first.train_loader))
    assert batch.inputs["features"].shape == (16, 7, 24) and batch.inputs["mask"].shape == (
        16,
        1,
        24,
    )
    assert len(first.train_loader) == 19  # ceil(300 / 16), the last batch wrapped around
    folders = _staged_folders(tmp_path)
    assert len(folders) == 2

    caplog.clear()
    again = _load(_data(toy, max_particles=24), tmp_path)
    assert "reusing staged training data" in caplog.text
    assert "reusing staged validation data" in caplog.text
    assert _staged_folders(tmp_path) == folders
    assert again.train.root == first.train.root
    _load(_data(toy, max_particles=32), tmp_path)  # another setting: another key
    assert len(_staged_folders(tmp_path)) == 4


def test_weaver_config_inputs_are_mapped_from_its_groups(toy: Path, tmp_path: Path) -> None:
    trial = _load(_data(toy, config=str(WEAVER_CONFIG)), tmp_path)
    assert trial.inputs.fields == {
        "points": "_pf_points",
        "features": "_pf_features",
        "mask": "_pf_mask",
        "labels": "_label_",
    }
    assert (trial.inputs.num_features, trial.inputs.num_classes) == (7, 2)
    assert trial.val_shard.signal_class == 0  # the config lists [is_top, is_qcd]
    batch, num_real = next(iter(trial.val_shard))
    assert batch.inputs["points"].shape == (16, 2, 128) and batch.inputs["features"].shape == (
        16,
        7,
        128,
    )
    assert num_real == 16
    assert trial.val.extra["training"] is True  # weaver's val loader: training selection
    is_top = np.load(trial.val.shard_path("_label_", 0)) == 0
    assert 0.3 < is_top.mean() < 0.7


THREE_CLASSES = Path(__file__).parents[2] / "examples" / "configs" / "toy-three-classes.yaml"


def test_three_classes_reach_the_validation_shard(toy: Path, tmp_path: Path, caplog) -> None:
    trial = _load(_data(toy, config=str(THREE_CLASSES)), tmp_path)
    assert trial.inputs.num_classes == 3
    assert trial.val_shard.classes == ClassLabels(
        labels=("is_qcd", "is_top", "is_massive"), background=0
    )
    labels = np.load(trial.val.shard_path("_label_", 0))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert "no background class" not in caplog.text

    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(THREE_CLASSES.read_text().replace("is_qcd", "is_light"))
    trial = _load(_data(toy, config=str(renamed)), tmp_path)
    assert trial.val_shard.classes is not None and trial.val_shard.classes.background is None
    assert (
        "no background class: the per-class rejections (val_rej50_<class>, ...) are not "
        "reported; set data.background_class to the class they are measured against"
    ) in caplog.text


def test_validation_is_standardised_with_what_the_training_files_gave(
    toy: Path, tmp_path: Path
) -> None:
    auto = tmp_path / "jets_auto.yaml"
    text = WEAVER_CONFIG.read_text().replace("method: manual", "method: auto")
    auto.write_text(text.replace("- [log_pt, 1.7, 0.7]", "- log_pt"))  # center: auto
    trial = _load(_data(toy, config=str(auto)), tmp_path / "cache")
    train_config = trial.train.extra["data_config"]
    assert trial.val.extra["data_config"] == train_config
    center = train_config["preprocess"]["params"]["log_pt"]["center"]
    assert isinstance(center, float), "computed from the training files"
    assert len(list(tmp_path.glob("jets_auto.*.auto.yaml"))) == 1  # as weaver writes it
    again = _load(_data(toy, config=str(auto)), tmp_path / "cache")
    assert again.val.root == trial.val.root


def test_other_ranks_wait_for_rank_0_and_read_their_share(toy: Path, tmp_path: Path) -> None:
    data = _data(toy, max_particles=16)
    results: dict[int, TrialData] = {}
    waiter = threading.Thread(
        target=lambda: results.update({1: _load(data, tmp_path, World(rank=1, size=2))})
    )
    waiter.start()
    results[0] = _load(data, tmp_path, World(rank=0, size=2))
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert results[0].train.root == results[1].train.root
    assert len(results[0].train_loader) == len(results[1].train_loader) == 10  # 300 / 32
    assert len(results[0].val_shard) == len(results[1].val_shard) == 4  # 51 and 50 jets


def test_a_model_taking_vectors_gets_them_from_either_kind_of_inputs(
    toy: Path, tmp_path: Path
) -> None:
    roles = input_roles("particle-transformer")
    builtin = _load(_data(toy, max_particles=24), tmp_path, roles=roles)
    batch = next(iter(builtin.train_loader))
    assert "points" not in batch.inputs
    assert "vectors" in batch.inputs and batch.inputs["vectors"].shape == (16, 4, 24)
    assert torch.equal(batch.inputs["vectors"] * batch.inputs["mask"], batch.inputs["vectors"]), (
        "zero in padded slots"
    )
    mapping = {"features": "pf_features", "vectors": "pf_vectors", "mask": "pf_mask"}
    weaver = _load(_data(toy, config=str(PART_CONFIG), inputs=mapping), tmp_path, roles=roles)
    assert dict(weaver.inputs.fields) == {
        "features": "_pf_features",
        "vectors": "_pf_vectors",
        "mask": "_pf_mask",
        "labels": "_label_",
    }
    batch = next(iter(weaver.train_loader))
    assert "points" not in batch.inputs and "vectors" in batch.inputs
    assert batch.inputs["vectors"].shape == (16, 4, 128)
    assert len(batch.model_args(roles)) == 3
