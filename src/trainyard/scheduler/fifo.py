"""Strict first-in-first-out placement of queued trials onto free slots.

Oldest experiment first, then lowest trial number. A request that does not fit blocks the
ones behind it (no backfilling), so a trial needing many GPUs is not starved by small ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchRequest:
    """A queued trial and the slots it needs."""

    experiment_id: int
    trial_number: int
    trial_id: int
    num_slots: int


def plan_launches(
    requests: Sequence[LaunchRequest],
    *,
    free_slots: int,
    room_per_experiment: Mapping[int, int],
) -> list[LaunchRequest]:
    """The requests to launch now, in launch order.

    Args:
        requests: queued trials of every active experiment, in any order.
        free_slots: slots not held by a running trial.
        room_per_experiment: how many more trials each experiment may run at once
            (its max_concurrent_trials minus its running trials); missing means none.
    """
    room = dict(room_per_experiment)
    planned = []
    for request in sorted(requests, key=lambda r: (r.experiment_id, r.trial_number)):
        if room.get(request.experiment_id, 0) <= 0:
            continue
        if request.num_slots > free_slots:
            break
        planned.append(request)
        free_slots -= request.num_slots
        room[request.experiment_id] -= 1
    return planned
