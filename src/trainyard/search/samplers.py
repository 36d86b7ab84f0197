"""Optuna samplers for a search that is asked and told across Master restarts.

A search outlives its Master: `trainyard run --resume` (after a crash, a SIGKILL or Ctrl-C)
builds the searcher again on the same study. Optuna's samplers are meant for one long-lived
process, so two of their habits break that:

- RandomSampler and TPESampler seed one RNG when they are built and draw from it for every
  trial. A rebuilt sampler starts that RNG over, so a resumed search proposed the first
  trials' configurations again (and trained them to the same metrics). `TrialSeededSampler`
  seeds every draw from (search seed, trial number, what is drawn) instead.
- GridSampler ends `Study.optimize` once the grid is done by calling `Study.stop()` from
  `after_trial`, which raises outside `optimize`: with ask/tell, telling the last grid point
  failed. `AskTellGridSampler` leaves that out; the searcher stops at `max_trials` itself.

GridSampler is already safe to rebuild: it shuffles the grid once from the seed and gives
trial n the n-th point of that order, so it needs no reseeding.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna import Study
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GridSampler
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(BaseSampler):
    """Draws each trial's values with a fresh sampler seeded for that trial and that draw.

    Nothing is carried between calls: a draw depends only on the search seed, the trial's
    number, the name of what is drawn and the trials stored in the study. So a search
    interrupted and resumed any number of times proposes exactly what an uninterrupted one
    proposes (given the same finished trials at each ask), and any thread may call it.

    Args:
        build: makes the wrapped sampler (e.g. RandomSampler) from an integer seed.
        seed: the search's seed (`searcher.seed`).
    """

    def __init__(self, build: Callable[[int], BaseSampler], *, seed: int) -> None:
        self._build = build
        self._seed = seed

    def _sampler_for(self, trial: FrozenTrial, draw: str) -> BaseSampler:
        # crc32, not hash(): Python salts str hashes per process, and the seed must not
        # change when the Master restarts.
        entropy = [self._seed, trial.number, zlib.crc32(draw.encode())]
        return self._build(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler_for(trial, "relative").infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        sampler = self._sampler_for(trial, "relative")
        return sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Seeded per parameter too, so two parameters of one trial are independent draws.
        sampler = self._sampler_for(trial, f"param:{param_name}")
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._sampler_for(trial, "before").before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler_for(trial, "after").after_trial(study, trial, state, values)


class AskTellGridSampler(GridSampler):
    """GridSampler without its end-of-grid `Study.stop()`, which only works inside `optimize`."""

    after_trial = BaseSampler.after_trial  # the base's no-op
