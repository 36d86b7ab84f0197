"""What the model is fed: which staged arrays fill each batch field, and the sizes they imply.

Two kinds of inputs exist. The built-in ParticleNet inputs (``ParticleNetSource``: points,
features, mask and labels with 1 = top) need no settings. A weaver data config names its own
input groups; the experiment maps three of them onto the model's points, features and mask,
and weaver's ``_label_`` (the index in ``labels.value``) gives the class. The Master's
preflight and the worker both read the experiment's data section through ``model_inputs``,
so an experiment that passes preflight builds the same inputs in its worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainyard.data.classes import metric_classes
from trainyard.data.features import FEATURE_NAMES
from trainyard.data.staged.loader import PARTICLENET_FIELDS
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.types import SimpleLabels, WeaverDataConfig
from trainyard.errors import ConfigError
from trainyard.metrics.multiclass import ClassLabels

MODEL_INPUTS = ("points", "features", "mask")
"""The model's inputs that come from input groups, in the order models take them."""
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
    """JetBatch field -> staged array name (StagedLoader's ``fields``)."""
    num_features: int
    """Channels of the features input: the model's ``num_features``."""
    num_classes: int
    signal_class: int
    """The class whose probability is the score of val_auc and the rejections."""
    weaver_config: WeaverDataConfig | None = None
    """The parsed data config; None for the built-in inputs."""
    classes: ClassLabels | None = None
    """With more than two classes: their metric names and the rejections' background."""


def model_inputs(
    config_path: str | Path | None,
    inputs: Mapping[str, str],
    signal_class: int | None,
    background_class: int | str | None = None,
) -> ModelInputs:
    """The inputs an experiment's data section describes (``data.config``, ``data.inputs``,
    ``data.signal_class``, ``data.background_class``); every problem is reported at once in
    a ConfigError whose lines start with the experiment key they concern."""
    if config_path is None:
        return _builtin(signal_class, background_class)
    return _from_weaver_config(Path(config_path), inputs, signal_class, background_class)


def _builtin(signal_class: int | None, background_class: int | str | None) -> ModelInputs:
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
        fields=PARTICLENET_FIELDS,
        num_features=len(FEATURE_NAMES),
        num_classes=BUILTIN_NUM_CLASSES,
        signal_class=chosen,
    )


def _from_weaver_config(
    path: Path,
    inputs: Mapping[str, str],
    signal_class: int | None,
    background_class: int | str | None,
) -> ModelInputs:
    try:
        config = load_weaver_config(path)
    except ConfigError as error:
        raise ConfigError(
            [f"`data.config` ({path}): {problem}" for problem in error.problems], source="data"
        ) from error
    problems = []
    groups = {group.name: group for group in config.inputs}
    available = ", ".join(groups)
    for name in MODEL_INPUTS:
        group_name = inputs[name]
        group = groups.get(group_name)
        if group is None:
            problems.append(
                f"`data.inputs.{name}`: the data config {path} has no input group "
                f"{group_name!r}; its groups are {available}"
            )
        elif group.length is None:
            problems.append(
                f"`data.inputs.{name}`: input group {group_name!r} of {path} has `length: null` "
                "(one value per jet); the model needs a per-particle group with a length"
            )
    chosen = [groups[inputs[name]] for name in MODEL_INPUTS if inputs[name] in groups]
    if len(chosen) == len(MODEL_INPUTS) and not problems:
        mask = groups[inputs["mask"]]
        if len(mask.variables) != 1:
            problems.append(
                f"`data.inputs.mask`: input group {mask.name!r} of {path} has "
                f"{len(mask.variables)} variables; a mask has exactly one (1 for a particle, "
                "0 for padding)"
            )
        lengths = {group.name: group.length for group in chosen}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{name}: {length}" for name, length in lengths.items())
            problems.append(
                f"`data.inputs`: the input groups have different lengths ({listed}) in {path}; "
                "points, features and mask need the same number of particle slots"
            )
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
    return ModelInputs(
        fields={**{name: f"_{inputs[name]}" for name in MODEL_INPUTS}, "labels": "_label_"},
        num_features=len(groups[inputs["features"]].variables),
        num_classes=num_classes,
        signal_class=chosen_signal,
        weaver_config=config,
        classes=classes,
    )
