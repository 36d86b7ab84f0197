"""A trial's export: the weights loaded from either checkpoint layout (refused if they do not
fit the model the trial's config builds), and a trial whose inputs come from a weaver config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from tests.data import config_files
from trainyard.config import parse_experiment
from trainyard.config.trial import resolve_trial
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.pipeline import prepare_config
from trainyard.errors import CheckpointError, ConfigError
from trainyard.export.preprocess import preprocess_json
from trainyard.export.trial import export_trial, load_model_weights
from trainyard.models import build_model
from trainyard.worker.checkpoint import CheckpointManager
from trainyard.worker.trained_state import trained_state


def lite(seed: int, **options: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("particlenet-lite", num_features=7, num_classes=2, options=options)


@pytest.mark.parametrize("sharded", [False, True], ids=["file", "sharded"])
def test_weights_load_from_either_layout(sharded: bool, tmp_path: Path) -> None:
    trained = lite(seed=1)
    optimizer = torch.optim.AdamW(trained.parameters())
    state = trained_state(trained, optimizer, sharded=sharded)
    manager = CheckpointManager(tmp_path, keep=1)
    if sharded:
        folder = manager.save(30, {}, config={}, shards=state)
    else:
        folder = manager.save(30, state, config={})
    loaded = manager.load(folder)
    assert (loaded.shards is not None) == sharded
    fresh = lite(seed=2)
    load_model_weights(fresh, loaded, manager, name="model X")
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    trained = lite(seed=1)
    manager = CheckpointManager(tmp_path, keep=1)
    optimizer = torch.optim.AdamW(trained.parameters())
    folder = manager.save(30, trained_state(trained, optimizer, sharded=False), config={})
    with pytest.raises(CheckpointError) as caught:
        load_model_weights(lite(seed=2, fc_dim=64), manager.load(folder), manager, name="X")
    message = str(caught.value)
    assert message.startswith(
        f"{folder}: its weights do not fit X as the trial's config builds it (size mismatch "
        "for fc.0.0.weight: copying a param with shape torch.Size([128, 64]) from checkpoint"
    )
    assert "; 3 problem(s) in all); was" in message
    assert message.endswith("was the model's code changed since it trained?")


def test_a_trial_with_a_weaver_config_exports_its_groups_and_json(tmp_path: Path) -> None:
    """`data.inputs` picks the groups; the file takes every group of the config, and the JSON
    is the config's (compared with weaver-core's own in test_preprocess.py)."""
    experiment = parse_experiment(
        {
            "name": "weaver-inputs",
            "model": {"name": "particlenet-lite", "options": {"k": 5}},
            "data": {
                "train": str(tmp_path / "t/*.parquet"),
                "val": str(tmp_path / "v/*.parquet"),
                "config": str(config_files.EXAMPLE),
                "signal_class": 0,
            },
            "training": {"max_length": {"batches": 10}},
        }
    )
    config = resolve_trial(experiment, {})
    trained = lite(seed=3, k=5)
    optimizer = torch.optim.AdamW(trained.parameters())
    folder = CheckpointManager(tmp_path / "c", keep=1).save(
        10, trained_state(trained, optimizer, sharded=False), config={}
    )
    exported = export_trial(config, folder, tmp_path / "out", name="model X")
    assert exported.batches == 10
    assert exported.output_names == ("is_top", "is_qcd")
    written = json.loads(exported.preprocess.read_text())
    assert written == preprocess_json(load_weaver_config(config_files.EXAMPLE))
    session = onnxruntime.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == written["input_names"]
    generator = torch.Generator().manual_seed(4)
    mask_B1P = torch.arange(30).view(1, 1, -1) < torch.tensor([30, 12, 7]).view(-1, 1, 1)
    points_BCP = torch.randn(3, 2, 30, generator=generator) * mask_B1P
    features_BCP = torch.randn(3, 7, 30, generator=generator) * mask_B1P
    tensors = (points_BCP, features_BCP, mask_B1P.float())
    (probabilities,) = session.run(
        ["softmax"],
        {name: t.numpy() for name, t in zip(written["input_names"], tensors, strict=True)},
    )
    with torch.no_grad():
        expected = torch.softmax(trained.eval()(*tensors), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)


def test_auto_standardisation_comes_from_the_auto_yaml_training_wrote(
    toy_dir: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "auto.yaml"
    shutil.copy(config_files.AUTO_WEIGHTED, config_path)
    config = resolve_trial(
        parse_experiment(
            {
                "name": "auto",
                "model": "particlenet-lite",
                "data": {
                    "train": str(toy_dir / "*.parquet"),
                    "val": str(toy_dir / "*.parquet"),
                    "config": str(config_path),
                },
                "training": {"max_length": {"batches": 10}},
            }
        ),
        {},
    )
    trained = lite(seed=5)
    optimizer = torch.optim.AdamW(trained.parameters())
    folder = CheckpointManager(tmp_path / "c", keep=1).save(
        10, trained_state(trained, optimizer, sharded=False), config={}
    )
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="are still 'auto'; the preprocessing JSON needs"):
        export_trial(config, folder, out)
    assert not out.exists()  # refused before anything was written

    completed = prepare_config(sorted(toy_dir.glob("*.parquet")), config_path)  # as staging
    exported = export_trial(config, folder, out)
    written = json.loads(exported.preprocess.read_text())
    assert written == preprocess_json(load_weaver_config(completed.source))
    assert written["pf_features"]["var_infos"]["log_pt"]["median"] != 0
