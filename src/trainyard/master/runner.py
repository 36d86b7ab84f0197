"""Drive one experiment: create trials, launch workers, watch them, and end or pause cleanly.

The runner owns no state the store does not have: after a crash, `resume` rebuilds everything
from the store and relaunches unfinished trials, which continue from their last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from trainyard.executors import Executor, WorkerLaunch
from trainyard.master.api.schemas import TrialOut
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import ExperimentState, TrialState

logger = logging.getLogger(__name__)

_RESUMABLE = {TrialState.QUEUED, TrialState.RUNNING, TrialState.STOPPED, TrialState.ERRORED}


class ExperimentRunner:
    """Runs an experiment's trials on one executor until they finish or a pause is asked for."""

    def __init__(
        self,
        *,
        service: MasterService,
        executor: Executor,
        settings: Settings,
        master_url: str,
        token: str,
    ) -> None:
        self._service = service
        self._executor = executor
        self._settings = settings
        self._master_url = master_url
        self._token = token
        self._pause_requested = threading.Event()

    def request_pause(self) -> None:
        """Ask the loop to checkpoint every running trial and stop (safe from a signal handler)."""
        self._pause_requested.set()

    def run(self, experiment_id: int, *, on_tick: Callable[[], None] | None = None) -> str:
        """Run until every trial is finished or a pause was requested; returns the final state."""
        self._requeue_unfinished(experiment_id)
        self._service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
        config = self._service.experiment_config(experiment_id)
        slots_per_trial = config.resources.slots_per_trial
        max_concurrent = config.resources.max_concurrent_trials
        while True:
            if self._pause_requested.is_set():
                self._pause(experiment_id)
                return ExperimentState.PAUSED.value
            self._reap(experiment_id)
            self._watch_heartbeats()
            self._fill_slots(experiment_id, slots_per_trial, max_concurrent)
            if on_tick:
                on_tick()
            if not self._executor.running() and self._all_finished(experiment_id):
                return self._finish(experiment_id)
            time.sleep(self._settings.poll_interval_s)

    # -- launching ---------------------------------------------------------------------------

    def _fill_slots(self, experiment_id: int, slots_per_trial: int, max_concurrent: int) -> None:
        room = min(
            self._executor.free_slots() // slots_per_trial,
            max_concurrent - len(self._executor.running()),
        )
        if room <= 0:
            return
        self._service.create_trials(experiment_id, num_free=room)
        queued = [
            t for t in self._service.list_trials(experiment_id) if t.state == TrialState.QUEUED
        ]
        for trial in queued[:room]:
            self._launch(trial, slots_per_trial)

    def _launch(self, trial: TrialOut, num_slots: int) -> None:
        assert trial.log_path is not None, "trials get their log path when created"
        env = {
            "TRAINYARD_MASTER_URL": self._master_url,
            "TRAINYARD_TOKEN": self._token,
            "TRAINYARD_TRIAL_ID": str(trial.id),
        }
        self._executor.launch(
            WorkerLaunch(
                trial_id=trial.id, num_slots=num_slots, log_path=Path(trial.log_path), env=env
            )
        )
        self._service.update_trial(
            trial.id,
            state=TrialState.RUNNING,
            worker_pid=self._executor.worker_pid(trial.id),
            last_heartbeat_at=datetime.now(UTC),
            error=None,
        )

    # -- watching ----------------------------------------------------------------------------

    def _reap(self, experiment_id: int) -> None:
        for trial_id in self._executor.running():
            code = self._executor.poll(trial_id)
            if code is None:
                continue
            trial = self._service.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                continue
            reason = _describe_exit(code)
            self._service.update_trial(
                trial_id,
                state=TrialState.ERRORED,
                error=f"{reason}\n{self._log_tail(trial)}",
            )
            logger.warning("trial %d (experiment %d): %s", trial.number, experiment_id, reason)

    def _watch_heartbeats(self) -> None:
        now = datetime.now(UTC)
        for trial_id in self._executor.running():
            trial = self._service.get_trial(trial_id)
            if trial.state != TrialState.RUNNING or trial.last_heartbeat_at is None:
                continue
            silent_s = (now - trial.last_heartbeat_at).total_seconds()
            if silent_s > self._settings.heartbeat_timeout_s:
                self._executor.kill(trial_id)
                reason = (
                    f"worker sent no heartbeat for {silent_s:.0f} s (limit "
                    f"{self._settings.heartbeat_timeout_s:.0f} s, TRAINYARD_HEARTBEAT_TIMEOUT_S); "
                    "it was killed as hung"
                )
                self._service.update_trial(
                    trial_id, state=TrialState.ERRORED, error=f"{reason}\n{self._log_tail(trial)}"
                )

    def _all_finished(self, experiment_id: int) -> bool:
        trials = self._service.list_trials(experiment_id)
        if not trials:
            return False
        return all(TrialState(t.state).is_finished() for t in trials) and not (
            self._service.create_trials(experiment_id, num_free=self._executor.free_slots())
        )

    def _finish(self, experiment_id: int) -> str:
        trials = self._service.list_trials(experiment_id)
        num_errored = sum(t.state == TrialState.ERRORED for t in trials)
        if num_errored == len(trials):
            state, message = ExperimentState.ERRORED, f"all {len(trials)} trial(s) errored"
        else:
            state = ExperimentState.COMPLETED
            message = f"{num_errored} of {len(trials)} trial(s) errored" if num_errored else None
        self._service.set_experiment_state(experiment_id, state, message)
        return state.value

    # -- pausing and resuming ----------------------------------------------------------------

    def _pause(self, experiment_id: int) -> None:
        """Workers get SIGTERM, checkpoint and exit; stragglers are killed after a grace."""
        self._service.set_experiment_state(experiment_id, ExperimentState.PAUSED)
        for trial_id in self._executor.running():
            self._executor.stop(trial_id)
        deadline = time.monotonic() + self._settings.stop_grace_s
        while self._executor.running() and time.monotonic() < deadline:
            for trial_id in self._executor.running():
                self._executor.poll(trial_id)
            time.sleep(0.1)
        for trial_id in self._executor.running():
            self._executor.kill(trial_id)
        for trial in self._service.list_trials(experiment_id):
            if trial.state in (TrialState.RUNNING, TrialState.QUEUED):
                self._service.update_trial(trial.id, state=TrialState.STOPPED)

    def _requeue_unfinished(self, experiment_id: int) -> None:
        """On resume, unfinished trials go back to the queue; orphaned workers are ended first."""
        for trial in self._service.list_trials(experiment_id):
            if TrialState(trial.state) not in _RESUMABLE:
                continue
            if trial.state == TrialState.RUNNING:
                _kill_orphan(trial.worker_pid)
            restarts = trial.num_restarts + (trial.state != TrialState.QUEUED)
            self._service.update_trial(trial.id, state=TrialState.QUEUED, num_restarts=restarts)

    def _log_tail(self, trial: TrialOut) -> str:
        if not trial.log_path or not Path(trial.log_path).exists():
            return "(no worker log was written)"
        lines = Path(trial.log_path).read_text(errors="replace").splitlines()
        tail = lines[-self._settings.log_tail_lines :]
        return f"last {len(tail)} line(s) of {trial.log_path}:\n" + "\n".join(tail)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"worker was killed by signal {signal.Signals(-code).name} without reporting"
    return f"worker exited with code {code} without reporting an outcome"


def _kill_orphan(pid: int | None) -> None:
    """End a worker left by a Master that died, but only if that pid is still our worker."""
    if pid is None:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"trainyard.worker" in cmdline:
        os.killpg(pid, signal.SIGKILL)
