"""One trial's config: the experiment file with the trial's hyperparameters applied, once.

The searcher picks values by name (`lr`, `batch_size`, `k`, ...). `resolve_trial` puts each
value in its one home (the optimizer, the global batch size, the model's options) and
validates the result with the same rules as the experiment file, so `lr: -1` is refused here,
before a worker starts, with the hyperparameter's name. The worker and preflight read only the
typed fields of `TrialConfig`; nothing after this module looks a hyperparameter up by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Tag, ValidationError

from trainyard.config.entrypoint import EntrypointSpec
from trainyard.config.schema import (
    CheckpointSpec,
    Constant,
    DataSpec,
    ExperimentConfig,
    ModelSpec,
    ResourcesSpec,
    SearcherName,
    TrainingSpec,
    _Strict,
)
from trainyard.errors import ConfigError

OPTIMIZER_HYPERPARAMETERS = frozenset({"lr", "weight_decay", "momentum"})
"""Hyperparameters that set the optimizer's field of the same name."""
TRAINING_HYPERPARAMETERS = OPTIMIZER_HYPERPARAMETERS | {"batch_size", "seed"}
"""Hyperparameters the training loop consumes; all others are options of the model."""


class TrialConfig(_Strict):
    """Everything a worker needs to know about its trial's training, fully resolved."""

    experiment: str
    """The experiment's name (for logs and the config saved beside each checkpoint)."""
    model: ModelSpec
    """The model, its options including the trial's model hyperparameters (e.g. `k`)."""
    data: DataSpec
    training: TrainingSpec
    """The loop, with the trial's `batch_size`, `seed`, `lr`, `weight_decay` and `momentum`
    applied."""
    resources: ResourcesSpec
    checkpoint: CheckpointSpec
    hyperparameters: dict[str, Constant]
    """The values the searcher chose, as chosen (for the record; already applied above)."""


class ScriptTrialConfig(_Strict):
    """What a script trial's `trainyard.core` needs to know: the command that runs it, the
    values the searcher chose (handed to the script as they are), and what the searcher ranks
    trials by."""

    experiment: str
    entrypoint: EntrypointSpec
    resources: ResourcesSpec
    checkpoint: CheckpointSpec
    hyperparameters: dict[str, Constant]
    searcher_metric: str | None
    """The validation metric a search ranks trials by; None for `single` (nothing ranks)."""
    searcher_mode: Literal["max", "min"]
    """Whether the searcher wants `searcher_metric` high or low."""


def _trial_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "script" if value.get("entrypoint") is not None else "model"
    return "script" if isinstance(value, ScriptTrialConfig) else "model"


AnyTrialConfig = Annotated[
    Annotated[TrialConfig, Tag("model")] | Annotated[ScriptTrialConfig, Tag("script")],
    Discriminator(_trial_kind),
]
"""A trial's resolved config as the spec carries it: the built-in loop's, or a script's."""


def resolve_any_trial(
    config: ExperimentConfig, hyperparameters: Mapping[str, Any]
) -> TrialConfig | ScriptTrialConfig:
    """The trial's resolved config, of the kind the experiment trains."""
    if config.entrypoint is None:
        return resolve_trial(config, hyperparameters)
    search = config.searcher.name is not SearcherName.SINGLE
    return ScriptTrialConfig(
        experiment=config.name,
        entrypoint=config.entrypoint,
        resources=config.resources,
        checkpoint=config.checkpoint,
        hyperparameters=dict(hyperparameters),
        searcher_metric=config.searcher.metric if search else None,
        searcher_mode=config.searcher.mode,
    )


def resolve_trial(config: ExperimentConfig, hyperparameters: Mapping[str, Any]) -> TrialConfig:
    """Apply one trial's hyperparameters to the experiment's config and validate the result.

    Raises:
        ConfigError: a value is not allowed where it goes (one line per problem, named by
            its hyperparameter, e.g. "`hyperparameters.lr`: ... (got -1)").
    """
    assert config.model and config.data and config.training, "a built-in model's experiment"
    optimizer = config.training.optimizer.model_dump() | {
        name: value for name, value in hyperparameters.items() if name in OPTIMIZER_HYPERPARAMETERS
    }
    training = config.training.model_dump() | {"optimizer": optimizer}
    for name in ("batch_size", "seed"):
        if name in hyperparameters:
            training[name] = hyperparameters[name]
    model_values = {
        name: value
        for name, value in hyperparameters.items()
        if name not in TRAINING_HYPERPARAMETERS
    }
    raw = {
        "experiment": config.name,
        "model": {"name": config.model.name, "options": config.model.options | model_values},
        "data": config.data.model_dump(),
        "training": training,
        "resources": config.resources.model_dump(),
        "checkpoint": config.checkpoint.model_dump(),
        "hyperparameters": dict(hyperparameters),
    }
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        problems = [_problem(detail, hyperparameters) for detail in err.errors()]
        raise ConfigError(problems, source=f"trial of {config.name}") from None


def _problem(detail: Any, hyperparameters: Mapping[str, Any]) -> str:
    """One line, keyed by the hyperparameter that put the value there when one did."""
    loc = tuple(detail["loc"])
    names = {
        ("training", "optimizer", "lr"): "lr",
        ("training", "optimizer", "weight_decay"): "weight_decay",
        ("training", "optimizer", "momentum"): "momentum",
        ("training", "batch_size"): "batch_size",
        ("training", "seed"): "seed",
    }
    name = names.get(loc)
    target = ".".join(str(part) for part in loc)
    message = str(detail["msg"]).removeprefix("Value error, ")
    if name in hyperparameters:
        return (
            f"`hyperparameters.{name}`: {message} (got {detail.get('input')!r}); this "
            f"hyperparameter sets `{target}`, so give it values allowed there"
        )
    return f"`{target}`: {message} (got {detail.get('input')!r})"
