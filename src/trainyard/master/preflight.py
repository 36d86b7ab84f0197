"""Checks that need more than the schema: files exist, the model builds, names line up.

Run before anything is queued, so a typo costs seconds, not a place in the queue.
"""

from __future__ import annotations

from trainyard.config import ExperimentConfig
from trainyard.config.schema import TRAINING_HYPERPARAMETERS
from trainyard.data.features import FEATURE_NAMES
from trainyard.data.reader import resolve_files
from trainyard.errors import ConfigError, DataError, ModelError
from trainyard.models import accepted_options, build_model
from trainyard.search import validate_searcher

VALIDATION_METRICS = ("val_loss", "val_accuracy", "val_auc", "val_rej30", "val_rej50")


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
    for split in ("train", "val"):
        try:
            resolve_files(getattr(config.data, split))
        except DataError as err:
            problems.append(f"`data.{split}`: {err}")
    problems += _model_problems(config)
    if config.searcher.metric not in VALIDATION_METRICS:
        problems.append(
            f"`searcher.metric`: no trial reports {config.searcher.metric!r}; "
            f"use one of {', '.join(VALIDATION_METRICS)}"
        )
    try:
        validate_searcher(config)
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)


def _model_problems(config: ExperimentConfig) -> list[str]:
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
    options = {
        **config.model.options,
        **{k: v for k, v in config.hyperparameters.items() if k not in TRAINING_HYPERPARAMETERS},
    }
    try:
        build_model(
            config.model.name, num_features=len(FEATURE_NAMES), num_classes=2, options=options
        )
    except ModelError as err:
        return [f"`model`: {err}"]
    return []
