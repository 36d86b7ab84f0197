"""grid, random, tpe and asha on Optuna, through ask/tell only.

The study lives in the experiment store's own database (Optuna's RDB storage; our tables are
prefixed `ty_` so the two share it), so a restarted Master reloads it and neither reruns a
finished trial nor loses a running one. Trial n's hyperparameters depend only on the seed, n
and the study's stored trials, so a resumed search proposes what an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import warnings

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import TrialState as OptunaTrialState

from trainyard.config import ExperimentConfig, SearcherName
from trainyard.errors import ConfigError
from trainyard.search.asha_rungs import asha_rungs
from trainyard.search.base import Decision, Proposal, Rung, Searcher, TrialResult
from trainyard.search.samplers import AskTellGridSampler, TrialSeededSampler
from trainyard.search.spaces import constants, grid_values, search_spaces, to_distributions

logger = logging.getLogger(__name__)

_OPTUNA_STATES: dict[TrialResult, OptunaTrialState] = {
    "completed": OptunaTrialState.COMPLETE,
    "stopped": OptunaTrialState.PRUNED,
    "errored": OptunaTrialState.FAIL,
}


class OptunaSearcher(Searcher):
    """One Optuna study per experiment; trials are asked for as slots free up."""

    def __init__(self, config: ExperimentConfig, *, storage_url: str, study_name: str) -> None:
        self._metric = config.searcher.metric
        self._constants = constants(config)
        self._distributions = to_distributions(config)
        self._max_trials = _max_trials(config)
        self._orphans: list[optuna.trial.FrozenTrial] = []
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._study = optuna.create_study(
                storage=storage_url,
                study_name=study_name,
                direction="maximize" if config.searcher.mode == "max" else "minimize",
                sampler=_sampler(config),
                pruner=_pruner(config),
                load_if_exists=True,
            )

    @property
    def max_trials(self) -> int:
        return self._max_trials

    def next_trials(self, *, num_created: int, num_free: int) -> list[Proposal]:
        proposals = []
        for _ in range(max(0, min(num_free, self._max_trials - num_created))):
            if self._orphans:
                orphan = self._orphans.pop(0)
                params, trial_id = orphan.params, orphan._trial_id
            else:
                trial = self._study.ask(self._distributions)
                params, trial_id = trial.params, trial._trial_id
            proposals.append(Proposal({**self._constants, **params}, trial_id))
        return proposals

    def on_validation(
        self, *, searcher_trial_id: int | None, batches: int, metrics: dict[str, float]
    ) -> Decision:
        value = metrics.get(self._metric)
        if searcher_trial_id is None or value is None or math.isnan(value):
            return Decision("continue")
        trial = optuna.trial.Trial(self._study, searcher_trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resumed trial may report a step again
            trial.report(value, step=batches)
        if trial.should_prune():
            return Decision(
                "stop", f"early-stopped at batch {batches}: {self._metric}={value:.4g}"
            )
        return Decision("continue")

    def on_trial_end(
        self, *, searcher_trial_id: int | None, result: TrialResult, best_value: float | None
    ) -> None:
        if searcher_trial_id is None:
            return
        frozen = self._study._storage.get_trial(searcher_trial_id)
        if frozen.state.is_finished():
            return
        state = _OPTUNA_STATES[result]
        if state is OptunaTrialState.COMPLETE and (best_value is None or math.isnan(best_value)):
            state = OptunaTrialState.FAIL
        values = best_value if state is OptunaTrialState.COMPLETE else None
        self._study.tell(frozen.number, values, state=state)

    def rungs(self) -> list[Rung]:
        """ASHA's rungs as Optuna's pruners record them: a trial judged at rung k carries
        the system attribute `completed_rung_k`; one that Optuna marked PRUNED was stopped at
        the last rung it completed, every other one went on."""
        return asha_rungs(self._study)

    def recover(self, known_searcher_trial_ids: set[int]) -> None:
        """Search trials asked for just before a crash, never stored, are proposed first."""
        running = self._study.get_trials(deepcopy=False, states=(OptunaTrialState.RUNNING,))
        self._orphans = [t for t in running if t._trial_id not in known_searcher_trial_ids]
        for orphan in self._orphans:
            logger.info("search trial %d was never started; proposing it again", orphan.number)


def check_search(config: ExperimentConfig) -> int:
    """Validate the search settings without touching storage; returns the number of trials."""
    to_distributions(config)
    return _max_trials(config)


def _max_trials(config: ExperimentConfig) -> int:
    requested = config.searcher.max_trials
    if _uses_grid(config):
        size = math.prod(len(values) for values in grid_values(config).values())
        return size if requested is None else min(size, requested)
    if requested is None:
        raise ConfigError(
            [
                f"`searcher.max_trials`: searcher `{config.searcher.name.value}` needs the "
                "number of trials to run, e.g. `max_trials: 16`"
            ]
        )
    if not search_spaces(config):
        raise ConfigError(
            [
                f"`hyperparameters`: searcher `{config.searcher.name.value}` has nothing to "
                "search; give at least one search space, or use `single`"
            ]
        )
    return requested


def _sampler(config: ExperimentConfig) -> BaseSampler:
    """The study's sampler; built again on every Master start, so it must not depend on
    how many trials this process asked for (see `search/samplers.py`)."""
    seed = config.searcher.seed
    name = config.searcher.name
    if _uses_grid(config):
        return AskTellGridSampler(grid_values(config), seed=seed)
    if name is SearcherName.TPE or (
        name is SearcherName.ASHA and config.searcher.asha.sampler == "tpe"
    ):
        return TrialSeededSampler(lambda trial_seed: TPESampler(seed=trial_seed), seed=seed)
    return TrialSeededSampler(lambda trial_seed: RandomSampler(seed=trial_seed), seed=seed)


def _uses_grid(config: ExperimentConfig) -> bool:
    name = config.searcher.name
    return name is SearcherName.GRID or (
        name is SearcherName.ASHA and config.searcher.asha.sampler == "grid"
    )


def _pruner(config: ExperimentConfig) -> BasePruner:
    if config.searcher.name is not SearcherName.ASHA:
        return NopPruner()
    asha = config.searcher.asha
    # The first rung sits at the first validation when its period is in batches; with a period
    # in epochs the Master cannot know the batch count, so Optuna estimates it ("auto").
    # A script trial's steps are its own: its first rung is min_batches, or estimated.
    period = config.training.validation_period.batches if config.training else None
    min_resource: int | str = asha.min_batches or period or "auto"
    if asha.pruner == "hyperband":
        return HyperbandPruner(min_resource=min_resource, reduction_factor=asha.reduction_factor)
    return SuccessiveHalvingPruner(
        min_resource=min_resource, reduction_factor=asha.reduction_factor
    )
