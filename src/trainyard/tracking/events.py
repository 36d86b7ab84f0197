"""What the Master tells trackers, as typed records; each names its experiment and trial."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainyard.protocol import MetricKind, TrialState

HyperparameterValue = float | int | str | bool


@dataclass(frozen=True)
class TrialRecord:
    """Which trial a record is about."""

    experiment_id: int
    trial_id: int
    trial_number: int


@dataclass(frozen=True)
class TrialStarted(TrialRecord):
    """A trial was created with these hyperparameters."""

    hyperparameters: Mapping[str, HyperparameterValue]


@dataclass(frozen=True)
class MetricsLogged(TrialRecord):
    """A training or validation report the store has just kept."""

    kind: MetricKind
    batches: int
    values: Mapping[str, float]


@dataclass(frozen=True)
class TrialEnded(TrialRecord):
    """A trial ended for good (completed, stopped by the searcher, errored or canceled)."""

    state: TrialState
    hyperparameters: Mapping[str, HyperparameterValue]
    best_metrics: Mapping[str, float]
    """The values of the trial's best validation report (by the searcher's metric); empty if
    it never validated."""
    checkpoint: Path | None
    """The checkpoint folder of the best validation if still on disk, else the latest."""


TrackingEvent = TrialStarted | MetricsLogged | TrialEnded


class Sink(Protocol):
    """One tracker of one experiment. `handle` may raise: the dispatcher then warns and stops
    sending to this sink, and training goes on."""

    description: str
    """Names the tracker and where it writes, for warnings (never holds a secret)."""

    def handle(self, event: TrackingEvent) -> None: ...

    def close(self) -> None: ...
