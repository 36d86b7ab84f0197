"""A trial's config: hyperparameters go to their one home and are validated there."""

from __future__ import annotations

import warnings

import pytest

from trainyard.config import parse_experiment
from trainyard.config.trial import resolve_trial
from trainyard.errors import ConfigError

RAW = {
    "name": "t",
    "model": {"name": "particlenet", "options": {"k": 8}},
    "data": {"train": "a", "val": "b"},
    "hyperparameters": {
        "lr": {"type": "log", "min": 1e-4, "max": 1e-2},
        "k": {"type": "categorical", "vals": [8, 16]},
        "batch_size": 64,
    },
    "training": {"max_length": {"batches": 3}, "optimizer": {"name": "sgd", "momentum": 0.5}},
}


def test_each_hyperparameter_lands_in_its_one_home() -> None:
    config = parse_experiment(RAW)
    trial = resolve_trial(config, {"lr": 0.003, "k": 16, "batch_size": 64, "weight_decay": 0.1})
    assert trial.training.optimizer.lr == 0.003
    assert trial.training.optimizer.weight_decay == 0.1
    assert trial.training.optimizer.momentum == 0.5  # the experiment file's
    assert trial.training.batch_size == 64
    assert trial.model.options == {"k": 16}
    assert trial.hyperparameters == {"lr": 0.003, "k": 16, "batch_size": 64, "weight_decay": 0.1}


def test_the_trial_config_is_frozen() -> None:
    trial = resolve_trial(parse_experiment(RAW), {"lr": 0.003, "k": 8, "batch_size": 64})
    with pytest.raises(ValueError, match="frozen"):
        trial.training.batch_size = 3  # type: ignore[misc]


def test_values_the_optimizer_refuses_are_named_by_hyperparameter() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_trial(parse_experiment(RAW), {"lr": -1, "batch_size": 0.5, "momentum": 3})
    problems = caught.value.problems
    assert problems[0].startswith("`hyperparameters.batch_size`: Input should be a valid integer")
    assert problems[1].startswith("`hyperparameters.lr`: Input should be greater than 0 (got -1)")
    assert "sets `training.optimizer.momentum`" in problems[2]


def test_dumping_a_search_does_not_warn() -> None:
    config = parse_experiment(RAW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dumped = config.model_dump(mode="json")
    assert dumped["hyperparameters"]["lr"] == {
        "type": "log",
        "min": 1e-4,
        "max": 1e-2,
        "count": None,
    }
    assert parse_experiment(dumped) == config
