"""Watching one experiment's workers for the runner: which exited, and why, and which went
silent. A failure is retried from the trial's checkpoint while restarts remain, with the
executor's words for the exit and the tail of the worker's log."""

from __future__ import annotations

import logging
import shlex
from datetime import UTC, datetime
from pathlib import Path

from trainyard.config.entrypoint import EntrypointSpec
from trainyard.executors import Executor
from trainyard.master.pack_roster import PackRoster
from trainyard.master.service import MasterService
from trainyard.protocol import TrialOut, TrialState
from trainyard.settings import Settings

logger = logging.getLogger("trainyard.master.runner")  # its lines are the runner's, by name


class WorkerWatch:
    """The exits and heartbeats of the workers an `ExperimentRunner` started."""

    def __init__(
        self,
        *,
        service: MasterService,
        executor: Executor,
        settings: Settings,
        packs: PackRoster,
    ) -> None:
        self._service = service
        self._executor = executor
        self._settings = settings
        self._packs = packs
        self._hung: dict[int, str] = {}
        """Worker id -> why it was killed as hung, until it is reaped."""
        self._waiting: set[int] = set()
        """Workers the cluster still queues: not silent, whatever their heartbeats."""

    def reap(self, *, max_restarts: int, entrypoint: EntrypointSpec | None) -> None:
        """Collect exited workers; a failure is retried from its checkpoint or marked errored."""
        for worker_id in self._executor.running():
            members = self.members(worker_id)
            code = self.poll(worker_id)
            if code is None:
                continue
            hung = self._hung.pop(worker_id, None)
            host = self._service.get_trial(worker_id)  # a pack writes its host's log
            for trial_id in members:
                trial = self._service.get_trial(trial_id)
                if trial.state not in (TrialState.RUNNING, TrialState.ERRORED):
                    continue
                reported = trial.error if trial.state == TrialState.ERRORED else None
                reason = hung or reported or self._describe_exit(worker_id, code, entrypoint)
                retried = self._service.fail_or_retry(
                    trial_id,
                    reason=f"{reason}\n{self._log_tail(host)}",
                    max_restarts=max_restarts,
                )
                logger.warning(
                    "trial %d: %s; %s", trial.number, reason, "retrying" if retried else "errored"
                )

    def watch_heartbeats(self) -> None:
        now = datetime.now(UTC)
        for worker_id in self._executor.running():
            if worker_id in self._hung:
                continue
            if self._executor.waiting(worker_id):  # queued by the cluster: not silent
                self._waiting.add(worker_id)
                continue
            if worker_id in self._waiting:  # started just now: silence counts from here
                self._waiting.discard(worker_id)
                for trial_id in self.members(worker_id):
                    self._service.update_trial(trial_id, last_heartbeat_at=now)
                continue
            # A pack's worker lives while any of its running members beats.
            beats = [
                t.last_heartbeat_at
                for t in map(self._service.get_trial, self.members(worker_id))
                if t.state == TrialState.RUNNING and t.last_heartbeat_at is not None
            ]
            if not beats:
                continue
            silent_s = (now - max(beats)).total_seconds()
            if silent_s > self._settings.heartbeat_timeout_s:
                self._executor.kill(worker_id)
                self._hung[worker_id] = (
                    f"worker sent no heartbeat for {silent_s:.0f} s (limit "
                    f"{self._settings.heartbeat_timeout_s:.0f} s, TRAINYARD_HEARTBEAT_TIMEOUT_S); "
                    "it was killed as hung"
                )

    def members(self, worker_id: int) -> list[int]:
        """The trials a worker trains: its pack's members, or its own trial alone."""
        return self._packs.members(worker_id)

    def poll(self, worker_id: int) -> int | None:
        """The executor's poll; once the workers have exited, their trials' attempts are over."""
        code = self._executor.poll(worker_id)
        if code is not None:
            for trial_id in self._packs.pop(worker_id):
                self._service.end_attempt(trial_id)
        return code

    def _describe_exit(self, worker_id: int, code: int, entrypoint: EntrypointSpec | None) -> str:
        """The executor's words for an exit without an outcome; for a script, named as such,
        with what a script that exits 0 without an outcome most likely lacks."""
        described = self._executor.describe_exit(worker_id, code)
        if entrypoint is None:
            return described
        command = shlex.join(entrypoint.command)
        described = f"script {command!r}: " + described.replace("worker ", "", 1)
        if code == 0:
            described += (
                "; a script reports through trainyard.core: run its training inside "
                "`with trainyard.core.init() as ctx:`"
            )
        return described

    def _log_tail(self, trial: TrialOut) -> str:
        if not trial.log_path or not Path(trial.log_path).exists():
            return "(no worker log was written)"
        lines = Path(trial.log_path).read_text(errors="replace").splitlines()
        tail = lines[-self._settings.log_tail_lines :]
        return f"last {len(tail)} line(s) of {trial.log_path}:\n" + "\n".join(tail)
