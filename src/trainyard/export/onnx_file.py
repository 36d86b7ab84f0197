"""A trained model as ONNX with weaver-core's conventions, so CMSSW runs it as a weaver export.

weaver-core's ``--export-onnx`` gives the file one input per input group of the data config,
named as the group and in the config's order (pf_points, pf_features, pf_mask, ...), whether
the network reads it or not; axis 0 of every input is the batch, named ``N``, and axis 2 the
particle slots, named ``n_<prefix>`` after the group's name up to its first underscore
(``n_pf``); the one output, ``softmax``, holds class probabilities (batch axis ``N``), since
CMSSW's producers read probabilities. The file written here follows those conventions, so a
CMSSW configuration made for a weaver export takes it unchanged.

Which group feeds which model input comes from one place, ``onnx_inputs``: the model's input
roles in the order it takes them, each mapped to an input group by the experiment's
``data.inputs``.

Shape legend: B batch (jets), C channels of a group, P particle slots, K classes.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainyard.data.weaver.types import WeaverDataConfig
from trainyard.errors import ExportError

ONNX_FILE = "model.onnx"
OUTPUT_NAME = "softmax"
BATCH_AXIS = "N"
DEFAULT_OPSET = 15
"""weaver-core's default ``--onnx-opset``; CMSSW's ONNX Runtime runs it."""
TRACE_BATCH = 2
"""Jets in the example batch the exporter traces: an axis of size 1 would be baked in."""

_UNSUPPORTED = re.compile(r"operator '(?P<operator>[^']+)' to ONNX opset version (?P<opset>\d+)")
_ADDED_IN = re.compile(r"added in version (?P<opset>\d+)")


@dataclass(frozen=True)
class OnnxInput:
    """One input of the ONNX file: a weaver input group, (B, C, P) or (B, C) per jet."""

    name: str
    num_channels: int
    length: int | None
    """Particle slots of the example batch; None for one value per jet (no particle axis)."""
    role: str | None
    """The model input it feeds ("points", "features", ...); None if the model ignores it."""

    def dynamic_axes(self) -> dict[int, str]:
        """weaver's names: batch ``N``, particles ``n_<prefix>`` (``n_pf`` for pf_points)."""
        if self.length is None:
            return {0: BATCH_AXIS}
        return {0: BATCH_AXIS, 2: f"n_{self.name.split('_')[0]}"}

    def example(self) -> torch.Tensor:
        """Ones, as weaver traces with; the mask then marks every slot as a particle."""
        shape = [TRACE_BATCH, self.num_channels]
        if self.length is not None:
            shape.append(self.length)
        return torch.ones(shape, dtype=torch.float32)


def onnx_inputs(config: WeaverDataConfig, roles: Mapping[str, str]) -> tuple[OnnxInput, ...]:
    """The ONNX file's inputs: every group of the data config, in its order, each with the
    model input it feeds.

    Args:
        config: the data config the model was trained with (the built-in inputs have one too,
            ``trainyard.data.features.builtin_weaver_config``).
        roles: model input role -> input group name, in the order the model takes them
            (``data.inputs``: points, features, mask).
    """
    fed = {group: role for role, group in roles.items()}
    missing = sorted(set(fed) - {group.name for group in config.inputs})
    assert not missing, f"the trial's data.inputs name groups the config lacks: {missing}"
    return tuple(
        OnnxInput(
            name=group.name,
            num_channels=len(group.variables),
            length=group.length,
            role=fed.get(group.name),
        )
        for group in config.inputs
    )


class WithSoftmax(nn.Module):
    """The trained model as weaver's export sees it: every input group in, probabilities out.

    The groups the model reads are picked by position and passed in the order of ``roles``;
    softmax over the classes turns its logits (B, K) into what CMSSW reads. The exporter
    drops inputs the graph never reads (a group no role takes, the points of a model that
    ignores them), but CMSSW feeds every group preprocess.json lists and refuses a name the
    file lacks, so each group's batch size is read once (a slice of the output to its own
    length, which changes nothing) to keep every group an input.
    """

    def __init__(self, model: nn.Module, inputs: Sequence[OnnxInput], roles: Sequence[str]):
        super().__init__()
        self.model = model
        position = {item.role: index for index, item in enumerate(inputs) if item.role}
        self.positions = tuple(position[role] for role in roles)

    def forward(self, *groups: torch.Tensor) -> torch.Tensor:
        logits_BK = self.model(*(groups[index] for index in self.positions))
        probabilities_BK = torch.softmax(logits_BK, dim=1)
        for group in groups:
            probabilities_BK = probabilities_BK[: group.shape[0]]
        return probabilities_BK


def export_onnx(
    model: nn.Module,
    inputs: Sequence[OnnxInput],
    roles: Sequence[str],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    name: str = "the model",
) -> Path:
    """Write ``model`` (in eval mode, softmax appended) as ONNX to ``path``; return the path.

    Raises:
        ExportError: an operator of the model has no ONNX form in ``opset`` (the message
            names it and the opset), or the exporter failed otherwise.
    """
    _require_onnx()
    wrapped = WithSoftmax(model, inputs, roles).eval()
    names = [item.name for item in inputs]
    # The TorchScript-based exporter (dynamo=False), the one weaver-core's --export-onnx uses:
    # it traces the eval forward once and records each shape the model reads as a graph
    # operation, so ParticleNet's views over batch*particles and its top-k over the particles
    # stay dynamic, and it takes weaver's dynamic_axes as they are. The dynamo exporter also
    # exports ParticleNet on torch 2.13 (tried, with onnxscript 0.7), but cannot turn these
    # dynamic_axes of a forward(*groups) into torch.export's dynamic_shapes by itself, and it
    # needs onnxscript besides onnx. The TorchScript exporter is deprecated in torch 2.13; when
    # it goes, pass torch.export.Dim per group and axis instead.
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns that it is deprecated, and that the models'
            # shape checks are traced as constants; both are expected here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                tuple(item.example() for item in inputs),
                buffer,
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    **{item.name: item.dynamic_axes() for item in inputs},
                    OUTPUT_NAME: {0: BATCH_AXIS},
                },
                opset_version=opset,
            )
    except torch.onnx.errors.UnsupportedOperatorError as error:
        raise ExportError(_unsupported_message(error, name, opset)) from error
    except torch.onnx.errors.OnnxExporterError as error:
        raise ExportError(
            f"cannot export {name} to ONNX (opset {opset}): {_first_line(error)}"
        ) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def _unsupported_message(
    error: torch.onnx.errors.UnsupportedOperatorError, name: str, opset: int
) -> str:
    """Which operator, which opset, and what to do, from the exporter's message."""
    text = str(error)
    found = _UNSUPPORTED.search(text)
    operator = found.group("operator") if found else "an operator"
    used = found.group("opset") if found else str(opset)
    later = _ADDED_IN.search(text)
    fix = (
        f"export with --opset {later.group('opset')} or later, if the CMSSW release you target "
        "runs it"
        if later
        else "rewrite that part of the model with operations ONNX has (see "
        "https://github.com/onnx/onnx/blob/main/docs/Operators.md), then train or export again"
    )
    return (
        f"cannot export {name} to ONNX: operator '{operator}' has no ONNX form in opset "
        f"{used} (torch.onnx's TorchScript exporter); {fix}"
    )


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _require_onnx() -> None:
    """torch.onnx writes some graphs through the onnx package: refuse early without it."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError(
            "exporting to ONNX needs the onnx package; install it with "
            "`pip install 'trainyard[export]'`"
        ) from None
