"""Checks that need more than the schema: files exist, the data config parses and has the
mapped input groups, batch sizes split over the ranks, the model builds, names line up.

Run before anything is queued, so a typo costs seconds, not a place in the queue.
"""

from __future__ import annotations

from typing import Any

from trainyard.config import ExperimentConfig
from trainyard.config.schema import Categorical, DoubleRange, IntRange, LogRange
from trainyard.config.trial import TRAINING_HYPERPARAMETERS, resolve_trial
from trainyard.data.batch import DEFAULT_INPUT_ROLES, InputGroups, InputRoles, ModelCall
from trainyard.data.features import POINT_NAMES
from trainyard.data.model_inputs import ModelInputs, model_inputs
from trainyard.data.reader import resolve_files
from trainyard.errors import ConfigError, DataError, ModelError
from trainyard.master.script_preflight import entrypoint_problems
from trainyard.master.searcher_metric import metric_problems
from trainyard.models import (
    accepted_options,
    build_loss,
    build_model,
    check_model_interface,
    input_roles,
)
from trainyard.search import validate_searcher
from trainyard.tracking import setup_problems


def preflight(config: ExperimentConfig, *, pool_capacity: int | None = None) -> None:
    """Raise one ConfigError listing every problem found, or return quietly.

    Args:
        config: the validated experiment file.
        pool_capacity: slots of the pool the experiment will run on, when known.
    """
    problems: list[str] = []
    slots = config.resources.slots_per_trial
    if pool_capacity is not None and slots > pool_capacity:
        problems.append(
            f"`resources.slots_per_trial`: {slots} slots per trial but the pool has "
            f"{pool_capacity}; lower it to at most {pool_capacity} or use a larger pool"
        )
    if config.entrypoint is not None:
        problems += entrypoint_problems(config)
    else:
        problems += _model_experiment_problems(config)
    problems += setup_problems(config.tracking)
    try:
        validate_searcher(config)
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)


def _model_experiment_problems(config: ExperimentConfig) -> list[str]:
    """The built-in loop's checks: data, model, batch sizes, values, the searcher's metric."""
    assert config.data is not None, "a built-in model's experiment"
    problems: list[str] = []
    for split in ("train", "val"):
        try:
            resolve_files(getattr(config.data, split))
        except DataError as err:
            problems.append(f"`data.{split}`: {err}")
    inputs = None
    try:
        inputs = model_inputs(
            config.data, roles=_roles(config), model=f"model {config.model.name!r}"
        )
    except ConfigError as err:
        problems += err.problems
    if inputs is not None:
        problems += _pack_problems(config, inputs.call)
    problems += _batch_size_problems(config)
    problems += _trial_value_problems(config)
    problems += _model_problems(config, inputs)
    if inputs is not None:  # else the data section is wrong: already reported
        problems += metric_problems(config.searcher.metric, inputs)
    return problems


def _batch_size_problems(config: ExperimentConfig) -> list[str]:
    """Every global batch a trial can get must split evenly over its ranks."""
    slots = config.resources.slots_per_trial
    if "batch_size" in config.hyperparameters:
        key, value = "hyperparameters.batch_size", config.hyperparameters["batch_size"]
    else:
        key, value = "training.batch_size", config.training.batch_size
    if isinstance(value, DoubleRange | LogRange):
        return [
            f"`{key}`: a {value.type} range can pick batch sizes that are not whole numbers; "
            "use an int range or categorical values"
        ]
    if slots == 1:
        return []
    if isinstance(value, IntRange):
        uneven = next((n for n in range(value.min, value.max + 1) if n % slots), None)
        if uneven is None:
            return []
        return [
            f"`{key}`: the int range {value.min} to {value.max} includes batch sizes that do "
            f"not split evenly over resources.slots_per_trial = {slots} ranks (e.g. {uneven}); "
            f"list multiples of {slots} as categorical values instead"
        ]
    candidates: list[Any] = value.vals if isinstance(value, Categorical) else [value]
    return [
        f"`{key}`: the global batch of {candidate} does not split evenly over "
        f"resources.slots_per_trial = {slots} ranks; choose a multiple of {slots}, or "
        "another number of slots"
        for candidate in candidates
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate % slots
    ]


def _trial_value_problems(config: ExperimentConfig) -> list[str]:
    """Values a trial can get that its config would refuse (lr: -1, momentum: 2, ...).

    Each hyperparameter is tried at every value it can take that matters here: a constant,
    the ends of a range, each categorical value; the others stay at their first value.
    """
    candidates = {name: _extremes(space) for name, space in config.hyperparameters.items()}
    baseline = {name: values[0] for name, values in candidates.items()}
    problems: list[str] = []
    for name, values in candidates.items():
        for value in values:
            try:
                resolve_trial(config, {**baseline, name: value})
            except ConfigError as err:
                problems += [p for p in err.problems if p not in problems]
    return problems


def _extremes(space: Any) -> list[Any]:
    if isinstance(space, IntRange | DoubleRange | LogRange):
        return [space.min, space.max]
    if isinstance(space, Categorical):
        return list(space.vals)
    return [space]


def _roles(config: ExperimentConfig) -> InputRoles | None:
    """The inputs the model takes (None: a network file's groups); the default for an
    unknown model (`_model_problems` says so)."""
    try:
        return input_roles(config.model.name)
    except ModelError:
        return DEFAULT_INPUT_ROLES


def _pack_problems(config: ExperimentConfig, roles: ModelCall) -> list[str]:
    """A pack feeds its members (points, features, mask) through one fused step
    (worker/packing); a model taking other inputs trains one trial per worker."""
    pack = config.resources.pack
    if not isinstance(pack, int) or pack == 1 or roles == DEFAULT_INPUT_ROLES:
        return []
    return [
        f"`resources.pack`: model {config.model.name!r} is called as {roles.call}, but packed "
        f"trials are fed forward(points, features, mask) only, so `resources.pack: {pack}` "
        "cannot pack it; set `resources.pack` to off or auto (auto trains it one trial per "
        "worker)"
    ]


def _model_problems(config: ExperimentConfig, inputs: ModelInputs | None) -> list[str]:
    try:
        accepted = accepted_options(config.model.name)
    except ModelError as err:
        return [f"`model.name`: {err}"]
    problems = [
        f"`hyperparameters.{name}`: used by neither the training loop "
        f"({', '.join(sorted(TRAINING_HYPERPARAMETERS))}) nor model {config.model.name!r} "
        f"(options: {', '.join(sorted(accepted)) or 'none'})"
        for name in config.hyperparameters
        if accepted is not None and name not in TRAINING_HYPERPARAMETERS and name not in accepted
    ]
    if problems or config.search_space_names():
        return problems
    if inputs is None:  # the data section is wrong: already reported
        return []
    try:
        options = resolve_trial(config, config.hyperparameters).model.options
    except ConfigError:  # a value the trial's config refuses: already reported
        return []
    num_point_channels, num_particles = _point_shape(config, inputs)
    try:
        network_config = inputs.network_config()
        model = build_model(
            config.model.name,
            num_features=inputs.num_features,
            num_classes=inputs.num_classes,
            options=options,
            data_config=network_config,
        )
        check_model_interface(
            model,
            name=config.model.name,
            num_point_channels=num_point_channels,
            num_features=inputs.num_features,
            num_particles=num_particles,
            num_classes=inputs.num_classes,
            roles=inputs.call,
        )
        build_loss(config.model.name, options=options, data_config=network_config)
    except ModelError as err:
        return [f"`model`: {err}"]
    return []


def _point_shape(config: ExperimentConfig, inputs: ModelInputs) -> tuple[int, int]:
    """Coordinates per particle (of the points input, when the model takes one) and particle
    slots per jet."""
    if inputs.weaver_config is None:
        return len(POINT_NAMES), config.data.max_particles
    if isinstance(inputs.call, InputGroups):  # the groups carry their own shapes
        return 0, 0
    groups = {group.name: group for group in inputs.weaver_config.inputs}
    features = groups[config.data.inputs.features]
    assert features.length is not None, "model_inputs refuses per-jet groups"
    points = groups.get(config.data.inputs.points)
    num_point_channels = len(points.variables) if points is not None else len(POINT_NAMES)
    return num_point_channels, features.length
