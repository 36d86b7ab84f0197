"""A weaver network file trains through `trainyard run` from the example experiment: its
forward is fed every input group of the data config in order, its get_loss is the training
loss, and `trainyard export` writes an ONNX file with the groups as inputs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml

from tests.integration.helpers import (
    EXAMPLES,
    cli_env,
    last_validation,
    run_cli,
    short_training,
)
from trainyard.data.weaver.network_config import NetworkDataConfig
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.models import build_model

pytestmark = pytest.mark.integration

PARTICLES = 32
TINY_PART = {
    "embed_dims": [16, 16],
    "pair_embed_dims": [8],
    "num_heads": 2,
    "num_layers": 1,
    "num_cls_layers": 1,
}
# weaver-core's own ParticleTransformer, as the example network file builds it; its loss
# records each call, so the test sees that training used get_loss.
NETWORK = """
import torch
from torch import nn
from weaver.nn.model.ParticleTransformer import ParticleTransformer


class Wrapper(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.mod = ParticleTransformer(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(features, v=lorentz_vectors, mask=mask)


class RecordedLoss(nn.CrossEntropyLoss):
    def __init__(self, record_to):
        super().__init__()
        self.record_to = record_to

    def forward(self, logits, labels):
        with open(self.record_to, "a") as record:
            record.write(f"{tuple(logits.shape)}\\n")
        return super().forward(logits, labels)


def get_model(data_config, record_to, **kwargs):
    model = Wrapper(
        input_dim=len(data_config.input_dicts["pf_features"]),
        num_classes=len(data_config.label_value),
        pair_input_dim=4,
        **kwargs,
    )
    return model, {"input_names": list(data_config.input_names)}


def get_loss(data_config, record_to, **kwargs):
    return RecordedLoss(record_to)
"""


def _short_config(tmp_path: Path) -> Path:
    """The example's data config with PARTICLES slots per group, to keep the run short."""
    config = yaml.safe_load((EXAMPLES / "configs" / "top-kin-inputs.yaml").read_text())
    for group in config["inputs"].values():
        group["length"] = PARTICLES
    path = tmp_path / "top-kin-short.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # the order is the call
    return path


def test_a_network_file_trains_with_its_loss_and_exports_its_groups(
    toy_data, write_experiment, tmp_path
) -> None:
    network = tmp_path / "networks" / "part_recorded.py"
    network.parent.mkdir()
    network.write_text(textwrap.dedent(NETWORK))
    record = tmp_path / "loss-calls.txt"
    data_config = _short_config(tmp_path)
    options = {**TINY_PART, "record_to": str(record)}

    config = yaml.safe_load((EXAMPLES / "weaver-network.yaml").read_text())
    config["model"] = {"name": str(network), "options": options}
    config["data"].update(
        train=str(toy_data / "train" / "*.parquet"),
        val=str(toy_data / "val" / "*.parquet"),
        config=str(data_config),
    )
    short_training(config)
    home = tmp_path / "home"
    result = run_cli(["run", str(write_experiment(config))], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "experiment 1 COMPLETED" in result.stdout

    # Every group of the data config was staged and fed.
    staged = [p for p in (home / "cache" / "staged").iterdir() if not p.name.startswith(".")]
    for folder in staged:
        for group in ("pf_points", "pf_features", "pf_vectors", "pf_mask"):
            assert any(folder.glob(f"_{group}.*")), f"{group} staged in {folder}"
    # get_loss's loss trained the model (24 steps of 64 jets) and scored validation.
    calls = record.read_text().splitlines()
    assert calls.count("(64, 2)") >= 24, calls[:30]
    metrics = last_validation(home, 1)
    assert np.isfinite(metrics["val_loss"]) and metrics["val_auc"] > 0.6, metrics

    out = tmp_path / "export"
    exported = run_cli(["export", "1", "--onnx", str(out)], cli_env(home))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    session = onnxruntime.InferenceSession(
        str(out / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    assert names == ["pf_points", "pf_features", "pf_vectors", "pf_mask"]

    # ONNX Runtime gives the checkpoint's eval softmax, at another batch and particle count.
    model = build_model(
        str(network),
        num_features=0,
        num_classes=0,
        options=options,
        data_config=NetworkDataConfig.from_config(load_weaver_config(data_config)),
    )
    checkpoint = next(home.glob("experiments/*/trials/*/checkpoints/step-*"))
    model.load_state_dict(torch.load(checkpoint / "state.pt", weights_only=True)["model"])
    generator = torch.Generator().manual_seed(3)
    batch, particles = 5, PARTICLES + 8
    mask = (torch.arange(particles) < torch.tensor([[40], [31], [12], [3], [1]])).float()
    mask = mask.view(batch, 1, particles)
    momenta = 10 * torch.randn(batch, 3, particles, generator=generator)
    vectors = torch.cat((momenta, 1.1 * momenta.norm(dim=1, keepdim=True)), dim=1) * mask
    inputs = (
        torch.randn(batch, 2, particles, generator=generator) * mask,
        torch.randn(batch, 7, particles, generator=generator) * mask,
        vectors,
        mask,
    )
    (probabilities,) = session.run(
        None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)}
    )
    with torch.no_grad():
        expected = torch.softmax(model.eval()(*inputs), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
