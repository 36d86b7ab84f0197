"""The experiment page's physics and search panels: the best trial's ROC curve, and ASHA's
rungs with the searcher's decisions at each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainyard.master.service import MasterService
from trainyard.metrics import background_rejection
from trainyard.store.dashboard_reads import searcher_trial_numbers
from trainyard.store.rocs import validation_roc

WORKING_POINTS = (0.3, 0.5)
"""Signal efficiencies at which the ROC panel marks and prints 1/eps_B, as tagger papers do."""


@dataclass(frozen=True)
class RocPanel:
    """The ROC curve of one validation of the best trial, as tagger papers plot it."""

    trial_number: int
    batches: int
    signal_efficiency: list[float]
    background_efficiency: list[float]
    marks: list[tuple[float, float]]
    """(eps_S, 1/eps_B) at each working point, read as `background_rejection` reads them."""

    def chart_data(self) -> dict[str, object]:
        """x = eps_S, y = 1/eps_B (points where no background passes have no finite y and are
        left out: a log axis cannot show them)."""
        points = [
            [s, 1.0 / b]
            for s, b in zip(self.signal_efficiency, self.background_efficiency, strict=True)
            if b > 0
        ]
        return {
            "trial": self.trial_number,
            "points": points,
            "marks": [[s, r] for s, r in self.marks if math.isfinite(r)],
        }


def roc_panel(
    service: MasterService, *, trial_id: int, trial_number: int, batches: int
) -> RocPanel | None:
    """The ROC curve stored with the trial's validation at `batches`; None when that
    validation has none (a script trial, or a report from before ROC curves were stored)."""
    with service.store.session() as session:
        roc = validation_roc(session, trial_id=trial_id, batches=batches)
    if roc is None:
        return None
    signal = np.asarray(roc.signal_efficiency)
    background = np.asarray(roc.background_efficiency)
    return RocPanel(
        trial_number=trial_number,
        batches=batches,
        signal_efficiency=list(roc.signal_efficiency),
        background_efficiency=list(roc.background_efficiency),
        marks=[(p, background_rejection(signal, background, p)) for p in WORKING_POINTS],
    )


@dataclass(frozen=True)
class RungRow:
    """One ASHA rung: its step and the trial numbers that reached it, went on, or stopped."""

    bracket: int
    index: int
    step: int | None
    reached: list[int]
    promoted: list[int]
    stopped: list[int]


def rungs_panel(service: MasterService, experiment_id: int) -> list[RungRow]:
    """ASHA's rungs of the experiment as its searcher recorded them; empty for other
    searchers."""
    rungs = service.searcher(experiment_id).rungs()
    if not rungs:
        return []
    with service.store.session() as session:
        numbers = searcher_trial_numbers(session, experiment_id=experiment_id)

    def trial_numbers(ids: list[int]) -> list[int]:
        return sorted(numbers[i] for i in ids if i in numbers)

    return [
        RungRow(
            bracket=r.bracket,
            index=r.index,
            step=r.step,
            reached=trial_numbers(r.reached),
            promoted=trial_numbers(r.promoted),
            stopped=trial_numbers(r.stopped),
        )
        for r in rungs
    ]
