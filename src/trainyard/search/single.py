"""One trial with the file's constant hyperparameters: the plain "just train it" case."""

from __future__ import annotations

from trainyard.config import ExperimentConfig
from trainyard.errors import ConfigError
from trainyard.search.base import Decision, Proposal, Searcher, TrialResult


class SingleSearcher(Searcher):
    """Runs exactly one trial to its full length; keeps no state of its own."""

    def __init__(self, config: ExperimentConfig) -> None:
        spaces = config.search_space_names()
        if spaces:
            raise ConfigError(
                [
                    f"`hyperparameters.{name}`: searcher `single` trains one configuration, so "
                    "give a constant value, or pick a search searcher (grid, random, asha, tpe)"
                    for name in spaces
                ]
            )
        if config.searcher.max_trials not in (None, 1):
            raise ConfigError(["`searcher.max_trials`: searcher `single` runs exactly 1 trial"])
        self._hyperparameters = dict(config.hyperparameters)

    def next_trials(self, *, num_created: int, num_free: int) -> list[Proposal]:
        return [Proposal(self._hyperparameters)] if num_created == 0 and num_free > 0 else []

    def on_validation(
        self, *, searcher_trial_id: int | None, batches: int, metrics: dict[str, float]
    ) -> Decision:
        return Decision("continue")

    def on_trial_end(
        self, *, searcher_trial_id: int | None, result: TrialResult, best_value: float | None
    ) -> None:
        return None

    def recover(self, known_searcher_trial_ids: set[int]) -> None:
        return None
