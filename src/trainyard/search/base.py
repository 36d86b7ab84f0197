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


@dataclass(frozen=True)
class Rung:
    """One ASHA rung as the searcher judged it: the step where trials are compared, and the
    searcher's trial ids of those that reached it, went on past it, or were stopped there."""

    bracket: int
    """Hyperband's bracket (0 for successive halving, which has one)."""
    index: int
    step: int | None
    """Batches a trial has trained when it is judged here; None while not yet known (an
    estimated first rung before any trial has reported)."""
    reached: list[int]
    promoted: list[int]
    stopped: list[int]


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

    def rungs(self) -> list[Rung]:
        """ASHA's rungs with the searcher's decisions there; none for searchers without."""
        return []

    @abc.abstractmethod
    def recover(self, known_searcher_trial_ids: set[int]) -> None:
        """After a Master restart: take back searcher trials that no stored trial refers to."""
