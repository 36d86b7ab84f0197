"""What the model is fed: which staged arrays fill each batch field, and the sizes they imply.

Two kinds of inputs exist. The built-in ParticleNet inputs (``ParticleNetSource``: points,
features, mask, labels with 1 = top, and vectors for a model that takes them) need no
settings. A weaver data config names its own input groups; the experiment maps them onto the
model's input roles (``data.inputs``: points, features, mask, and vectors), and weaver's
``_label_`` (the index in ``labels.value``) gives the class. Only the roles the model takes
(``InputRoles``) are checked and loaded. A weaver network file takes every input group of
its data config instead, in the config's order (``InputGroups``), as weaver-core feeds it.
The Master's preflight and the worker both read the experiment's data section through
``model_inputs``, so an experiment that passes preflight builds the same inputs in its worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainyard.data.batch import (
    DEFAULT_INPUT_ROLES,
    LABELS,
    NUM_VECTOR_COMPONENTS,
    InputGroups,
    InputRole,
    InputRoles,
    ModelCall,
)
from trainyard.data.classes import metric_classes
from trainyard.data.features import FEATURE_NAMES
from trainyard.data.weaver.network_config import NetworkDataConfig
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.types import InputGroup, SimpleLabels, WeaverDataConfig
from trainyard.errors import ConfigError
from trainyard.metrics.multiclass import ClassLabels

BUILTIN_CLASSES = ("QCD", "top")
"""The built-in labels: 0 = QCD, 1 = top."""
BUILTIN_NUM_CLASSES = len(BUILTIN_CLASSES)
BUILTIN_SIGNAL_CLASS = 1
WEAVER_SIGNAL_CLASS = 0
"""weaver configs list the signal first: [is_top, is_qcd] in ours, [jet_isTop, jet_isQCD] in the
TopLandscape ones."""


@dataclass(frozen=True)
class ModelInputs:
    """How staged arrays become JetBatches, and what that means for the model and metrics."""

    fields: Mapping[str, str]
    """JetBatch field -> staged array name (StagedLoader's ``fields``): the model's inputs
    and the labels."""
    num_features: int
    """Channels of the features input: the model's ``num_features``; 0 for a network file,
    which reads its sizes from the data config."""
    num_classes: int
    signal_class: int
    """The class whose probability is the score of val_auc and the rejections."""
    weaver_config: WeaverDataConfig | None = None
    """The parsed data config; None for the built-in inputs."""
    classes: ClassLabels | None = None
    """With more than two classes: their metric names and the rejections' background."""
    call: ModelCall = DEFAULT_INPUT_ROLES
    """The inputs the model takes, in the order it takes them."""

    @property
    def vectors(self) -> bool:
        """Whether the model takes Lorentz vectors (the built-in inputs then stage them)."""
        return isinstance(self.call, InputRoles) and InputRole.VECTORS in self.call

    def network_config(self) -> NetworkDataConfig | None:
        """The data-config object a weaver network file's get_model reads; None unless the
        model is a network file."""
        if not isinstance(self.call, InputGroups):
            return None
        assert self.weaver_config is not None, "network files need a data config"
        return NetworkDataConfig.from_config(self.weaver_config)


class InputGroupNames(Protocol):
    """The experiment's ``data.inputs``: the input group feeding each role."""

    @property
    def points(self) -> str: ...
    @property
    def features(self) -> str: ...
    @property
    def mask(self) -> str: ...
    @property
    def vectors(self) -> str | None: ...


class DataSection(Protocol):
    """The experiment's ``data`` section (config.DataSpec), as far as the inputs go."""

    @property
    def config(self) -> str | None: ...
    @property
    def inputs(self) -> InputGroupNames: ...
    @property
    def signal_class(self) -> int | None: ...
    @property
    def background_class(self) -> int | str | None: ...


def model_inputs(
    data: DataSection,
    *,
    roles: InputRoles | None = DEFAULT_INPUT_ROLES,
    model: str = "the model",
) -> ModelInputs:
    """The inputs the experiment's ``data`` section describes (``data.config``, ``data.inputs``,
    ``data.signal_class``, ``data.background_class``) for a model taking ``roles`` (named
    ``model`` in messages), or every input group of the data config for a weaver network file
    (``roles`` None); every problem is reported at once in a ConfigError whose lines start with
    the experiment key they concern."""
    if data.config is None:
        if roles is None:
            raise ConfigError(
                [
                    f"`data.config`: {model} is a weaver network file, which reads a weaver "
                    "data config (its input_names, input_dicts, input_shapes and label_value); "
                    "set `data.config` to the YAML file the network was written for"
                ],
                source="data",
            )
        return _builtin(data.signal_class, data.background_class, roles)
    return _from_weaver_config(
        Path(data.config), data.inputs, data.signal_class, data.background_class, roles, model
    )


def _builtin(
    signal_class: int | None, background_class: int | str | None, roles: InputRoles
) -> ModelInputs:
    chosen = BUILTIN_SIGNAL_CLASS if signal_class is None else signal_class
    problems = []
    if chosen >= BUILTIN_NUM_CLASSES:
        problems.append(
            f"`data.signal_class`: the built-in inputs have classes 0 (QCD) and 1 (top), "
            f"got {chosen}; use 1 (the default) or 0"
        )
    try:
        metric_classes(BUILTIN_CLASSES, background_class, where="the built-in inputs")
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems, source="data")
    return ModelInputs(
        fields={**{role.value: role.value for role in roles.roles}, LABELS: "labels"},
        num_features=len(FEATURE_NAMES),
        num_classes=BUILTIN_NUM_CLASSES,
        signal_class=chosen,
        call=roles,
    )


def _from_weaver_config(
    path: Path,
    inputs: InputGroupNames,
    signal_class: int | None,
    background_class: int | str | None,
    roles: InputRoles | None,
    model: str,
) -> ModelInputs:
    try:
        config = load_weaver_config(path)
    except ConfigError as error:
        raise ConfigError(
            [f"`data.config` ({path}): {problem}" for problem in error.problems], source="data"
        ) from error
    groups = {group.name: group for group in config.inputs}
    if roles is None:
        problems = _network_file_problems(path, config.inputs, model)
    else:
        problems = _group_problems(path, groups, inputs, roles, model)
    num_classes = 0
    if isinstance(config.labels, SimpleLabels):
        num_classes = len(config.labels.classes)
        if num_classes < 2:
            problems.append(
                f"`data.config` ({path}): `labels.value` lists {num_classes} class; "
                "classification needs at least two"
            )
    else:
        problems.append(
            f"`data.config` ({path}): `labels.type` is custom; trainyard trains classifiers "
            "on `type: simple` labels (one 0/1 expression per class in `labels.value`)"
        )
    chosen_signal = WEAVER_SIGNAL_CLASS if signal_class is None else signal_class
    if num_classes >= 2 and chosen_signal >= num_classes:
        assert isinstance(config.labels, SimpleLabels)
        problems.append(
            f"`data.signal_class`: {chosen_signal} is not a class of {path}, whose "
            f"`labels.value` {list(config.labels.classes)} has classes 0 to {num_classes - 1}"
        )
    classes = None
    if num_classes >= 2:
        assert isinstance(config.labels, SimpleLabels)
        try:
            classes = metric_classes(config.labels.classes, background_class, where=str(path))
        except ConfigError as error:
            problems += error.problems
    if problems:
        raise ConfigError(problems, source="data")
    call: ModelCall
    if roles is None:
        call = InputGroups(
            names=tuple(group.name for group in config.inputs),
            shapes=tuple((len(group.variables), group.length or 0) for group in config.inputs),
        )
        fed = {name: name for name in call.names}
        num_features = 0
    else:
        call = roles
        fed = {role.value: str(getattr(inputs, role.value)) for role in roles.roles}
        num_features = len(groups[fed[InputRole.FEATURES.value]].variables)
    return ModelInputs(
        fields={**{name: f"_{group}" for name, group in fed.items()}, LABELS: "_label_"},
        num_features=num_features,
        num_classes=num_classes,
        signal_class=chosen_signal,
        weaver_config=config,
        classes=classes,
        call=call,
    )


def _network_file_problems(path: Path, groups: Sequence[InputGroup], model: str) -> list[str]:
    """A network file is fed every input group as a (B, C, P) tensor: each needs a length."""
    return [
        f"`data.config` ({path}): input group {group.name!r} has `length: null` (one value "
        f"per jet), but {model}, a weaver network file, is fed every input group as a "
        "(batch, variables, length) tensor; give the group a length"
        for group in groups
        if group.length is None
    ]


def _group_problems(
    path: Path,
    groups: Mapping[str, InputGroup],
    inputs: InputGroupNames,
    roles: InputRoles,
    model: str,
) -> list[str]:
    """What is wrong with the input groups mapped to the model's roles, one line each."""
    problems = []
    available = ", ".join(groups)
    chosen: dict[InputRole, InputGroup] = {}
    for role in roles.roles:
        group_name = getattr(inputs, role.value)
        group = groups.get(group_name) if group_name is not None else None
        if group_name is None:
            problems.append(
                f"`data.inputs.{role.value}`: {model} is called as {roles.call} and needs "
                f"per-particle Lorentz vectors, but `data.inputs.{role.value}` is not set; set "
                f"it to the input group of {path} with the {NUM_VECTOR_COMPONENTS} variables "
                f"px, py, pz, energy (its groups are {available})"
            )
        elif group is None:
            problems.append(
                f"`data.inputs.{role.value}`: the data config {path} has no input group "
                f"{group_name!r}; its groups are {available}"
            )
        elif group.length is None:
            problems.append(
                f"`data.inputs.{role.value}`: input group {group_name!r} of {path} has "
                "`length: null` (one value per jet); the model needs a per-particle group with "
                "a length"
            )
        else:
            chosen[role] = group
    if problems:
        return problems
    mask = chosen[InputRole.MASK]
    if len(mask.variables) != 1:
        problems.append(
            f"`data.inputs.mask`: input group {mask.name!r} of {path} has "
            f"{len(mask.variables)} variables; a mask has exactly one (1 for a particle, "
            "0 for padding)"
        )
    vectors = chosen.get(InputRole.VECTORS)
    if vectors is not None and len(vectors.variables) != NUM_VECTOR_COMPONENTS:
        problems.append(
            f"`data.inputs.vectors`: input group {vectors.name!r} of {path} has "
            f"{len(vectors.variables)} variables ({', '.join(vectors.variable_names)}); Lorentz "
            f"vectors need exactly {NUM_VECTOR_COMPONENTS}, in the order px, py, pz, energy"
        )
    lengths = {group.name: group.length for group in chosen.values()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}: {length}" for name, length in lengths.items())
        names = ", ".join(role.value for role in roles.roles)
        problems.append(
            f"`data.inputs`: the input groups have different lengths ({listed}) in {path}; "
            f"{names} need the same number of particle slots"
        )
    return problems
