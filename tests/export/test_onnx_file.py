"""The ONNX file runs in ONNX Runtime (as CMSSW runs it) and gives torch's eval softmax, for
batch and particle counts other than those it was traced with, with weaver's names and axes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from tests.data import config_files
from trainyard.data.batch import DEFAULT_INPUT_ROLES, InputRole, InputRoles
from trainyard.data.features import BUILTIN_GROUPS, builtin_weaver_config
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.errors import ExportError
from trainyard.export.onnx_file import OUTPUT_NAME, export_onnx, onnx_inputs
from trainyard.models import build_model, input_roles


def groups_of(roles: InputRoles) -> dict[str, str]:
    """Role -> the built-in input group that feeds it, in the model's order."""
    return {role.value: BUILTIN_GROUPS[role] for role in roles.roles}


BUILTIN_ROLES = groups_of(DEFAULT_INPUT_ROLES)
SIZES = ((3, 24), (7, 48))
"""(jets, particle slots) of the two batches run; the file is traced with (2, 32)."""


def trained_like(name: str) -> nn.Module:
    """A model whose BatchNorm running statistics are not the initial ones, in eval mode."""
    torch.manual_seed(0)
    model = build_model(name, num_features=7, num_classes=2)
    model.train()
    roles = input_roles(name)
    with torch.no_grad():
        for _ in range(3):
            every = all_inputs(16, 32, seed=1)
            model(*(every[role] for role in roles.roles))
    return model.eval()


def all_inputs(batch: int, particles: int, *, seed: int) -> dict[InputRole, torch.Tensor]:
    """Random points, features, Lorentz vectors (massive: E > |p|) and mask; each jet has its
    own number of real particles, and padded slots hold zeros, as the staged inputs do."""
    generator = torch.Generator().manual_seed(seed)
    real_B = torch.randint(particles // 3, particles + 1, (batch,), generator=generator)
    mask_B1P = (torch.arange(particles).view(1, 1, -1) < real_B.view(-1, 1, 1)).float()
    momentum_B3P = torch.randn(batch, 3, particles, generator=generator)
    energy_B1P = (momentum_B3P.square().sum(1, keepdim=True) + 0.1).sqrt()
    return {
        InputRole.POINTS: torch.randn(batch, 2, particles, generator=generator) * mask_B1P,
        InputRole.FEATURES: torch.randn(batch, 7, particles, generator=generator) * mask_B1P,
        InputRole.VECTORS: torch.cat((momentum_B3P, energy_B1P), dim=1) * mask_B1P,
        InputRole.MASK: mask_B1P,
    }


def jets(batch: int, particles: int, *, seed: int) -> tuple[torch.Tensor, ...]:
    """Points, features and mask: the inputs of models with the default roles."""
    every = all_inputs(batch, particles, seed=seed)
    return tuple(every[role] for role in DEFAULT_INPUT_ROLES.roles)


@pytest.mark.parametrize(
    "name", ["particlenet", "particlenet-lite", "mlp", "particle-transformer"]
)
def test_onnxruntime_gives_torchs_softmax_for_other_batch_and_particle_counts(
    name: str, tmp_path: Path
) -> None:
    model, roles = trained_like(name), input_roles(name)
    config = builtin_weaver_config(max_particles=32, vectors=InputRole.VECTORS in roles)
    inputs = onnx_inputs(config, groups_of(roles))
    path = export_onnx(model, inputs, [role.value for role in roles.roles], tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # The MLP never reads the points, nor ParT; the file takes them all the same, as CMSSW
    # feeds every group.
    assert [i.name for i in session.get_inputs()] == [i.name for i in inputs]
    group_role = {group: role for role, group in BUILTIN_GROUPS.items()}
    for seed, (batch, particles) in enumerate(SIZES):
        every = all_inputs(batch, particles, seed=seed + 10)
        feed = {item.name: every[group_role[item.name]].numpy() for item in inputs}
        (probabilities,) = session.run([OUTPUT_NAME], feed)
        with torch.no_grad():
            expected = torch.softmax(model(*(every[r] for r in roles.roles)), dim=1).numpy()
        assert probabilities.shape == (batch, 2)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
        assert not np.allclose(expected[:, 0], expected[0, 0])  # jets are told apart


def test_names_and_dynamic_axes_are_weavers(tmp_path: Path) -> None:
    model = trained_like("particlenet-lite")
    inputs = onnx_inputs(builtin_weaver_config(max_particles=32), BUILTIN_ROLES)
    graph = onnx.load(export_onnx(model, inputs, list(BUILTIN_ROLES), tmp_path / "m.onnx")).graph

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert {i.name: dims(i) for i in graph.input} == {
        "pf_points": ["N", 2, "n_pf"],
        "pf_features": ["N", 7, "n_pf"],
        "pf_mask": ["N", 1, "n_pf"],
    }
    assert [(o.name, dims(o)) for o in graph.output] == [(OUTPUT_NAME, ["N", 2])]


def test_every_group_of_the_data_config_is_an_input_as_in_weaver(tmp_path: Path) -> None:
    """Groups the model does not read (pf_momenta, the per-jet `jet`) are inputs all the same,
    in the config's order, so the file matches preprocess.json's input_names."""
    config = load_weaver_config(config_files.WRAP)
    inputs = onnx_inputs(config, BUILTIN_ROLES)
    assert [(i.name, i.role) for i in inputs] == [
        ("pf_points", "points"),
        ("pf_features", "features"),
        ("pf_momenta", None),
        ("pf_mask", "mask"),
        ("jet", None),
    ]
    model = trained_like("particlenet-lite")
    path = export_onnx(model, inputs, list(BUILTIN_ROLES), tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [i.name for i in inputs]
    points, features, mask = jets(4, 40, seed=3)
    read = {"pf_points": points, "pf_features": features, "pf_mask": mask}
    feed = {
        item.name: read[item.name].numpy()
        if item.name in read
        else np.ones(item.example().shape[1:], dtype=np.float32)[None].repeat(4, axis=0)
        for item in inputs
    }
    (probabilities,) = session.run([OUTPUT_NAME], feed)
    with torch.no_grad():
        expected = torch.softmax(model(points, features, mask), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)


def test_an_operator_onnx_lacks_is_named_with_the_opset(tmp_path: Path, monkeypatch) -> None:
    """A user's entry-point model whose head uses digamma, which torch's TorchScript
    exporter cannot write in any opset."""
    (tmp_path / "digamma_head.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class DigammaHead(nn.Module):
                def __init__(self, num_features, num_classes):
                    super().__init__()
                    self.fc = nn.Linear(num_features, num_classes)

                def forward(self, points, features, mask):
                    return torch.digamma(self.fc(features.mean(dim=-1)).abs() + 1)

            def build(num_features, num_classes):
                return DigammaHead(num_features, num_classes)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("digamma_head:build", num_features=7, num_classes=2).eval()
    inputs = onnx_inputs(builtin_weaver_config(max_particles=16), BUILTIN_ROLES)
    with pytest.raises(ExportError) as caught:
        export_onnx(
            model, inputs, list(BUILTIN_ROLES), tmp_path / "out" / "model.onnx", name="model X"
        )
    assert str(caught.value).startswith(
        "cannot export model X to ONNX: operator 'aten::digamma' has no ONNX form in opset 15 "
        "(torch.onnx's TorchScript exporter); rewrite that part of the model with operations "
        "ONNX has"
    )
    assert not (tmp_path / "out").exists()


def test_without_the_onnx_package_the_extra_to_install_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    inputs = onnx_inputs(builtin_weaver_config(max_particles=16), BUILTIN_ROLES)
    with pytest.raises(ExportError) as caught:
        export_onnx(trained_like("particlenet-lite"), inputs, list(BUILTIN_ROLES), tmp_path / "m")
    assert str(caught.value) == (
        "exporting to ONNX needs the onnx package; install it with "
        "`pip install 'trainyard[export]'`"
    )
