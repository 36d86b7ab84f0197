"""What the Master asks of a searcher: which trials to run, and whether a trial goes on."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Decision:
    """The answer to a worker's "continue?" after a validation."""

    action: Literal["continue", "stop"]
    reason: str = ""


class Searcher(abc.ABC):
    """Proposes hyperparameters and judges progress; its state is recoverable from the store."""

    @abc.abstractmethod
    def next_trials(self, *, num_created: int, num_free: int) -> list[dict[str, Any]]:
        """Hyperparameters for up to `num_free` new trials, given `num_created` exist already."""

    @abc.abstractmethod
    def on_validation(
        self, *, trial_number: int, batches: int, metrics: dict[str, float]
    ) -> Decision:
        """Called after each validation a worker reports."""
