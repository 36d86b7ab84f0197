"""The experiment file's search spaces as Optuna distributions and as grids."""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from trainyard.config import ExperimentConfig
from trainyard.config.schema import Categorical, DoubleRange, IntRange, LogRange
from trainyard.errors import ConfigError

SearchSpace = IntRange | DoubleRange | LogRange | Categorical


def constants(config: ExperimentConfig) -> dict[str, Any]:
    """Hyperparameters with one fixed value, passed to every trial unchanged."""
    return {k: v for k, v in config.hyperparameters.items() if not isinstance(v, SearchSpace)}


def search_spaces(config: ExperimentConfig) -> dict[str, SearchSpace]:
    return {k: v for k, v in config.hyperparameters.items() if isinstance(v, SearchSpace)}


def to_distributions(config: ExperimentConfig) -> dict[str, BaseDistribution]:
    """One Optuna distribution per search space; categorical values must be plain scalars."""
    problems, distributions = [], {}
    for name, space in search_spaces(config).items():
        if isinstance(space, IntRange):
            distributions[name] = IntDistribution(space.min, space.max)
        elif isinstance(space, DoubleRange):
            distributions[name] = FloatDistribution(space.min, space.max)
        elif isinstance(space, LogRange):
            distributions[name] = FloatDistribution(space.min, space.max, log=True)
        else:
            bad = [v for v in space.vals if not isinstance(v, (bool, int, float, str, type(None)))]
            if bad:
                problems.append(
                    f"`hyperparameters.{name}.vals`: {bad[0]!r} is a {type(bad[0]).__name__}; "
                    "Optuna can only choose among None, bool, int, float and str values. "
                    "Name the choices with strings and map them in your model code"
                )
                continue
            distributions[name] = CategoricalDistribution(space.vals)
    if problems:
        raise ConfigError(problems)
    return distributions


def grid_values(config: ExperimentConfig) -> dict[str, list[Any]]:
    """Every value the grid searcher visits per hyperparameter; continuous ranges need a count."""
    problems, grid = [], {}
    for name, space in search_spaces(config).items():
        if isinstance(space, IntRange):
            grid[name] = list(range(space.min, space.max + 1))
        elif isinstance(space, Categorical):
            grid[name] = list(space.vals)
        elif space.count is None:
            problems.append(
                f"`hyperparameters.{name}`: a grid over a continuous {space.type} range needs "
                f"`count` (how many points), e.g. {{type: {space.type}, min: {space.min}, "
                f"max: {space.max}, count: 4}}"
            )
        elif isinstance(space, LogRange):
            step = (math.log(space.max) - math.log(space.min)) / (space.count - 1)
            inner = [math.exp(math.log(space.min) + i * step) for i in range(1, space.count - 1)]
            grid[name] = [space.min, *inner, space.max]  # exact ends: Optuna checks the range
        else:
            step = (space.max - space.min) / (space.count - 1)
            inner = [space.min + i * step for i in range(1, space.count - 1)]
            grid[name] = [space.min, *inner, space.max]
    if problems:
        raise ConfigError(problems)
    if not grid:
        raise ConfigError(
            ["`hyperparameters`: the grid searcher needs at least one search space to enumerate"]
        )
    return grid
