"""What the Master asks of a searcher: which trials to run, whether a trial goes on, results."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Literal

TrialResult = Literal["completed", "stopped", "errored"]


@dataclass(frozen=True)
class Decision:
    """The answer to a worker's "continue?" after a validation."""

    action: Literal["continue", "stop"]
    reason: str = ""


@dataclass(frozen=True)
class Proposal:
    """A trial to create: its hyperparameters and the searcher's own id for it."""

    hyperparameters: dict[str, Any]
    searcher_trial_id: int | None = None


class Searcher(abc.ABC):
    """Proposes hyperparameters and judges progress; its state is recoverable from the store."""

    @abc.abstractmethod
    def next_trials(self, *, num_created: int, num_free: int) -> list[Proposal]:
        """Up to `num_free` new trials, given that `num_created` exist already."""

    @abc.abstractmethod
    def on_validation(
        self, *, searcher_trial_id: int | None, batches: int, metrics: dict[str, float]
    ) -> Decision:
        """Called after each validation a worker reports."""

    @abc.abstractmethod
    def on_trial_end(
        self, *, searcher_trial_id: int | None, result: TrialResult, best_value: float | None
    ) -> None:
        """Called once when a trial is finished for good (after any retries)."""

    @abc.abstractmethod
    def recover(self, known_searcher_trial_ids: set[int]) -> None:
        """After a Master restart: take back searcher trials that no stored trial refers to."""
