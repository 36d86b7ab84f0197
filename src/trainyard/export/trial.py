"""A trial's trained model, exported for CMSSW: model.onnx and preprocess.json in one folder.

The model is rebuilt exactly as the worker builds it (the trial's resolved config, the same
builder, the sizes its data config gives), loaded from one checkpoint, and exported in eval
mode: ParticleNet then computes every edge with plain operations (its idle-edge skipping is
for training only), which is what ONNX can express.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from trainyard.config.schema import DataSpec
from trainyard.config.trial import TrialConfig
from trainyard.data.batch import InputGroups, ModelCall
from trainyard.data.features import BUILTIN_GROUPS, builtin_weaver_config
from trainyard.data.model_inputs import model_inputs
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.types import SimpleLabels, WeaverDataConfig
from trainyard.data.weaver.writer import auto_config_path
from trainyard.errors import CheckpointError
from trainyard.export.onnx_file import (
    DEFAULT_OPSET,
    ONNX_FILE,
    OnnxInput,
    export_onnx,
    onnx_inputs,
)
from trainyard.export.preprocess import preprocess_json, write_preprocess_json
from trainyard.models import build_model, input_roles
from trainyard.worker.checkpoint import MODEL, CheckpointManager, LoadedCheckpoint


@dataclass(frozen=True)
class ExportedModel:
    """What `export_trial` wrote."""

    onnx: Path
    preprocess: Path
    inputs: tuple[OnnxInput, ...]
    output_names: tuple[str, ...]
    batches: int
    """The step of the checkpoint exported."""


def model_input_groups(data: DataSpec, roles: ModelCall) -> dict[str, str]:
    """The model's input roles, in the order it takes them, each with the input group (as
    weaver names it) that feeds it: the experiment's ``data.inputs`` with a data config,
    top_kin.yaml's pf_points, pf_features, pf_vectors and pf_mask for the built-in inputs;
    a network file takes the groups themselves."""
    if isinstance(roles, InputGroups):
        return {name: name for name in roles.names}
    if data.config is None:
        return {role.value: BUILTIN_GROUPS[role] for role in roles.roles}
    return {role.value: str(getattr(data.inputs, role.value)) for role in roles.roles}


def export_trial(
    config: TrialConfig,
    checkpoint: Path,
    folder: Path,
    *,
    opset: int = DEFAULT_OPSET,
    name: str = "the trial's model",
) -> ExportedModel:
    """Rebuild the trial's model, load ``checkpoint`` into it, and write model.onnx and
    preprocess.json into ``folder``.

    Raises:
        CheckpointError: the checkpoint is damaged or does not fit the model.
        ExportError: the model uses an operator ONNX lacks (named, with the opset).
        ConfigError: the data config's standardisation is still "auto" and no completed
            *.auto.yaml is next to it.
    """
    manager = CheckpointManager(checkpoint.parent, keep=1)
    loaded = manager.load(checkpoint)  # verified first: a missing checkpoint is named at once
    data = config.data
    inputs = model_inputs(data, roles=input_roles(config.model.name), model=name)
    weaver = _completed(
        inputs.weaver_config or builtin_weaver_config(data.max_particles, vectors=inputs.vectors)
    )
    preprocess = preprocess_json(weaver)  # before anything is written: it may refuse
    model = build_model(
        config.model.name,
        num_features=inputs.num_features,
        num_classes=inputs.num_classes,
        options=config.model.options,
        data_config=inputs.network_config(),
    )
    load_model_weights(model, loaded, manager, name=name)
    roles = model_input_groups(data, inputs.call)
    exported_inputs = onnx_inputs(weaver, roles)
    onnx_path = export_onnx(
        model.eval(), exported_inputs, list(roles), folder / ONNX_FILE, opset=opset, name=name
    )
    preprocess_path = write_preprocess_json(preprocess, folder)
    return ExportedModel(
        onnx=onnx_path,
        preprocess=preprocess_path,
        inputs=exported_inputs,
        output_names=_class_names(weaver),
        batches=loaded.batches,
    )


def load_model_weights(
    model: nn.Module, loaded: LoadedCheckpoint, manager: CheckpointManager, *, name: str
) -> None:
    """Put the model weights of a loaded checkpoint (either layout) into ``model``."""
    if loaded.shards is not None:
        # Only the model's entries are asked for; DCP reads them in place.
        target = {MODEL: model.state_dict()}
        manager.load_shards(loaded, target)
        state = target[MODEL]
    else:
        state = loaded.state[MODEL]
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        # torch lists one problem per indented line after a heading; the first says enough.
        problems = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise CheckpointError(
            f"{loaded.path}: its weights do not fit {name} as the trial's config builds it "
            f"({problems[0] if problems else error}; {len(problems)} problem(s) in all); was "
            "the model's code changed since it trained?"
        ) from error


def _completed(config: WeaverDataConfig) -> WeaverDataConfig:
    """A config whose "auto" centers were computed in training: weaver's *.auto.yaml next to
    it, which staging wrote (preprocess_json refuses the config if there is none)."""
    if not config.pending_standardization or config.source is None:
        return config
    auto = auto_config_path(config.source)
    return load_weaver_config(auto) if auto.is_file() else config


def _class_names(config: WeaverDataConfig) -> tuple[str, ...]:
    """The output's classes, in order (trials train on simple labels only)."""
    labels = config.labels
    return labels.classes if isinstance(labels, SimpleLabels) else labels.names
