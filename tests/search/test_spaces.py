"""Search spaces become Optuna distributions and grids; impossible ones get clear errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from trainyard.config import parse_experiment
from trainyard.errors import ConfigError
from trainyard.search.spaces import constants, grid_values, to_distributions


def _config(hyperparameters: dict[str, Any]) -> Any:
    return parse_experiment(
        {
            "name": "s",
            "model": "mlp",
            "data": {"train": "a", "val": "b"},
            "hyperparameters": hyperparameters,
            "training": {"max_length": {"epochs": 1}},
        }
    )


def test_each_space_maps_to_its_distribution() -> None:
    config = _config(
        {
            "k": {"type": "int", "min": 4, "max": 16},
            "dropout": {"type": "double", "min": 0.0, "max": 0.5},
            "lr": {"type": "log", "min": 1e-4, "max": 1e-2},
            "fc_dim": {"type": "categorical", "vals": [64, 128]},
            "batch_size": 256,
        }
    )
    distributions = to_distributions(config)
    assert distributions["k"] == IntDistribution(4, 16)
    assert distributions["dropout"] == FloatDistribution(0.0, 0.5)
    assert distributions["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert distributions["fc_dim"] == CategoricalDistribution([64, 128])
    assert constants(config) == {"batch_size": 256}


def test_grid_enumerates_ints_categoricals_and_counted_ranges() -> None:
    grid = grid_values(
        _config(
            {
                "k": {"type": "int", "min": 4, "max": 6},
                "opt": {"type": "categorical", "vals": ["a", "b"]},
                "lr": {"type": "log", "min": 1e-4, "max": 1e-2, "count": 3},
                "dropout": {"type": "double", "min": 0.0, "max": 0.2, "count": 3},
            }
        )
    )
    assert grid["k"] == [4, 5, 6]
    assert grid["opt"] == ["a", "b"]
    assert [math.log10(v) for v in grid["lr"]] == pytest.approx([-4, -3, -2])
    assert grid["dropout"] == pytest.approx([0.0, 0.1, 0.2])


def test_grid_over_a_continuous_range_without_count() -> None:
    with pytest.raises(ConfigError, match=r"`hyperparameters.dropout`: a grid over a continuous"):
        grid_values(_config({"dropout": {"type": "double", "min": 0.0, "max": 0.5}}))


def test_grid_with_nothing_to_enumerate() -> None:
    with pytest.raises(ConfigError, match="the grid searcher needs at least one search space"):
        grid_values(_config({"lr": 0.01}))


def test_categorical_of_lists_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[1, 2\] is a list; Optuna can only choose"):
        to_distributions(_config({"layers": {"type": "categorical", "vals": [[1, 2], [3]]}}))
