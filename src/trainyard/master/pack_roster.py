"""The runner's packed workers: each one's worker key and members, joined ones included.

The executor knows a pack's worker by its host trial's id; the store knows it by its worker
key (`Executor.worker_key`: a pid, a job id, a Job uid hashed), which every member carries. Members
that join later (master/pack_joins.py) are learnt from the store: a trial RUNNING under a
pack's worker key that the pack does not list yet. A trial claimed by a pack whose worker
exited before the runner saw it join is retried like the pack's other members. The runner's
launches of a packed experiment claim their trials through the same conditional update as
joins (store/claims.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trainyard.executors import Executor
from trainyard.master.pack_joins import claim_for_launch
from trainyard.master.service import MasterService
from trainyard.protocol import TrialOut, TrialState

logger = logging.getLogger(__name__)


@dataclass
class _Pack:
    key: int | None
    """The worker's key (`Executor.worker_key`), stored on every member."""
    members: list[int]
    """Every trial the pack's worker took: those it started with, then those that joined."""


class PackRoster:
    """The packed workers of one experiment's runner, and the claims of its launches."""

    def __init__(self, service: MasterService) -> None:
        self._service = service
        self._packs: dict[int, _Pack] = {}

    def add(self, host_id: int, trial_ids: list[int], key: int | None) -> None:
        self._packs[host_id] = _Pack(key=key, members=list(trial_ids))

    def members(self, worker_id: int) -> list[int]:
        """The trials a worker trains: its pack's members, or its own trial alone."""
        pack = self._packs.get(worker_id)
        return list(pack.members) if pack else [worker_id]

    def pop(self, worker_id: int) -> list[int]:
        """Forget a worker that exited; returns the trials it trained."""
        pack = self._packs.pop(worker_id, None)
        return pack.members if pack else [worker_id]

    def free_places(self, trials: list[TrialOut], size: int) -> int:
        """Places left by members that ended, which the packs' workers fill by joins."""
        running = {t.id for t in trials if t.state is TrialState.RUNNING}
        in_packs = [len(running.intersection(pack.members)) for pack in self._packs.values()]
        # A pack with no member left is exiting: it takes no one.
        return sum(max(0, size - num) for num in in_packs if num > 0)

    def claim(self, trials: list[TrialOut], *, max_concurrent_trials: int) -> list[TrialOut]:
        """Those of `trials` the runner may launch (now RUNNING, no worker key yet); the
        others were taken by a pack's join, or the experiment is at max_concurrent_trials."""
        claimed = claim_for_launch(
            self._service,
            experiment_id=trials[0].experiment_id,
            trial_ids=[t.id for t in trials],
            max_concurrent_trials=max_concurrent_trials,
        )
        return [t for t in trials if t.id in claimed]

    def unclaim(self, trials: list[TrialOut]) -> None:
        """Back to the queue: their worker did not start."""
        for trial in trials:
            self._service.update_trial(trial.id, state=TrialState.QUEUED)

    def adopt_joined(self, experiment_id: int) -> list[int]:
        """Make each trial RUNNING under a pack's worker key that the pack does not list its
        member: watched, paused and reaped with it; its own log points to the pack's. Returns
        their ids."""
        adopted = []
        trials = self._service.list_trials(experiment_id)
        for host_id, pack in self._packs.items():
            for trial in trials:
                joined = trial.state is TrialState.RUNNING and trial.worker_key is not None
                if joined and trial.worker_key == pack.key and trial.id not in pack.members:
                    pack.members.append(trial.id)
                    adopted.append(trial.id)
                    host = self._service.get_trial(host_id)
                    logger.info(
                        "trial %d joined the pack of trial %d (worker key %s)",
                        trial.number,
                        host.number,
                        pack.key,
                    )
                    note_in_log(
                        trial, f"joined the pack of trial {host.number}; log: {host.log_path}"
                    )
        return adopted

    def reap_orphans(self, experiment_id: int, executor: Executor, max_restarts: int) -> None:
        """Retry each trial claimed by a pack whose worker exited before it was adopted."""
        workers = executor.running()
        for trial in orphaned_joins(
            self._service.list_trials(experiment_id),
            live_trials={t for w in workers for t in self.members(w)},
            live_keys={executor.worker_key(w) for w in workers},
        ):
            self._service.end_attempt(trial.id)
            reason = f"its pack's worker (worker key {trial.worker_key}) exited as it joined"
            retried = self._service.fail_or_retry(
                trial.id, reason=reason, max_restarts=max_restarts
            )
            logger.warning(
                "trial %d: %s; %s", trial.number, reason, "retrying" if retried else "errored"
            )


def orphaned_joins(
    trials: list[TrialOut], *, live_trials: set[int], live_keys: set[int | None]
) -> list[TrialOut]:
    """Trials RUNNING under a worker key that no live worker has and that no live worker
    lists: claimed by a pack whose worker exited before the runner saw them join."""
    return [
        t
        for t in trials
        if t.state is TrialState.RUNNING
        and t.worker_key is not None
        and t.id not in live_trials
        and t.worker_key not in live_keys
    ]


def note_in_log(trial: TrialOut, line: str) -> None:
    """A line in a packed member's own log, pointing to the pack's log that has its lines."""
    if trial.log_path:
        path = Path(trial.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} trainyard: {line}\n")
