"""Which running trials a starved project takes slots back from: a pure function.

A project is starved when its offer is above what it holds and the pool has too few free
slots to make up the difference. Trials of experiments holding more than their offer are then
preempted (they checkpoint, requeue and resume later), as determined's fair-share scheduler
releases a group's allocations above its offer and Kueue preempts the workloads of the
cohort member with the highest share. Only trials that ran at least `min_run_s` are taken, so
a trial always makes progress between preemptions; an experiment is never cut below its offer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningTrial:
    trial_id: int
    experiment_id: int
    slots: int
    run_s: float
    """Seconds since its worker started."""


def preemptions(
    *,
    offers: Mapping[int, int],
    held: Mapping[int, int],
    running: Sequence[RunningTrial],
    free: int,
    min_run_s: float,
) -> list[int]:
    """Trial ids to preempt now, fewest that cover the starved experiments' shortfall.

    `offers` and `held` are per experiment (slots); `free` is the pool's free slots.
    Victims come from the experiments furthest above their offer first, the most recently
    started trial first (it loses the least work), ties by trial id: deterministic.
    """
    shortfall = sum(max(offers.get(e, 0) - held.get(e, 0), 0) for e in offers) - free
    if shortfall <= 0:
        return []
    excess = {e: held.get(e, 0) - offers.get(e, 0) for e in held}
    candidates = sorted(
        (t for t in running if excess.get(t.experiment_id, 0) > 0 and t.run_s >= min_run_s),
        key=lambda t: (-excess[t.experiment_id], t.run_s, t.trial_id),
    )
    chosen: list[int] = []
    for trial in candidates:
        if shortfall <= 0:
            break
        if excess[trial.experiment_id] < trial.slots:  # would cut it below its offer
            continue
        chosen.append(trial.trial_id)
        excess[trial.experiment_id] -= trial.slots
        shortfall -= trial.slots
    return chosen
