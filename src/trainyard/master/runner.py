"""Drive one experiment: create trials, launch workers, watch them, and end or pause cleanly.

The runner owns no state the store does not have: after a crash, `run` rebuilds everything
from the store and relaunches unfinished trials, which continue from their last checkpoint.
The store is also its control plane: `trainyard pause | activate | kill` change the
experiment's state there, and the runner follows on its next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from trainyard.executors import Executor, WorkerLaunch
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, TrialOut, TrialState
from trainyard.scheduler import LaunchRequest, plan_launches
from trainyard.settings import Settings

logger = logging.getLogger(__name__)

_RESUMABLE = {TrialState.QUEUED, TrialState.RUNNING, TrialState.PAUSED}


class ExperimentRunner:
    """Runs an experiment's trials on one executor until they finish, or it is paused or killed."""

    def __init__(
        self,
        *,
        service: MasterService,
        executor: Executor,
        settings: Settings,
        master_url: str,
    ) -> None:
        self._service = service
        self._executor = executor
        self._settings = settings
        self._master_url = master_url
        self._pause_requested = threading.Event()
        self._hung: dict[int, str] = {}
        self._waiting: set[int] = set()
        self._search_exhausted = False

    def request_pause(self) -> None:
        """Checkpoint every running trial and return PAUSED (safe from a signal handler)."""
        self._pause_requested.set()

    def run(
        self, experiment_id: int, *, on_tick: Callable[[], None] | None = None
    ) -> ExperimentState:
        """Run until every trial is finished, a pause was requested, or it was killed."""
        self._requeue_unfinished(experiment_id)
        self._service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
        self._service.recover_searcher(experiment_id)
        config = self._service.experiment_config(experiment_id)
        while True:
            if self._pause_requested.is_set():
                self._stop_workers(experiment_id, ExperimentState.PAUSED, graceful=True)
                return ExperimentState.PAUSED
            state = self._service.get_experiment(experiment_id).state
            if state == ExperimentState.CANCELED:
                self._stop_workers(experiment_id, ExperimentState.CANCELED, graceful=False)
                return state
            if state == ExperimentState.PAUSED and self._executor.running():
                self._stop_workers(experiment_id, ExperimentState.PAUSED, graceful=True)
            elif self._resumed_after_pause(experiment_id):
                continue
            self._reap(config.max_restarts)
            self._watch_heartbeats()
            if state == ExperimentState.RUNNING:
                self._fill_slots(experiment_id)
            if on_tick:
                on_tick()
            if state == ExperimentState.RUNNING and self._finished(experiment_id):
                return self._finish(experiment_id)
            time.sleep(self._settings.poll_interval_s)

    # -- launching ---------------------------------------------------------------------------

    def _fill_slots(self, experiment_id: int) -> None:
        config = self._service.experiment_config(experiment_id)
        resources = config.resources
        num_running = len(self._executor.running())
        room = min(
            self._executor.free_slots() // resources.slots_per_trial,
            resources.max_concurrent_trials - num_running,
        )
        queued = self._queued(experiment_id)
        if room > len(queued) and not self._search_exhausted:
            created = self._service.create_trials(experiment_id, num_free=room - len(queued))
            self._search_exhausted = not created
            queued = self._queued(experiment_id)
        requests = [
            LaunchRequest(experiment_id, t.number, t.id, resources.slots_per_trial) for t in queued
        ]
        by_id = {t.id: t for t in queued}
        for request in plan_launches(
            requests,
            free_slots=self._executor.free_slots(),
            room_per_experiment={experiment_id: room},
        ):
            self._launch(by_id[request.trial_id], request.num_slots)

    def _queued(self, experiment_id: int) -> list[TrialOut]:
        return [
            t for t in self._service.list_trials(experiment_id) if t.state == TrialState.QUEUED
        ]

    def _launch(self, trial: TrialOut, num_slots: int) -> None:
        assert trial.log_path is not None, "trials get their log path when created"
        env = {
            "TRAINYARD_MASTER_URL": self._master_url,
            "TRAINYARD_TOKEN": self._service.issue_worker_token(trial.id),
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
        )

    # -- watching ----------------------------------------------------------------------------

    def _reap(self, max_restarts: int) -> None:
        """Collect exited workers; a failure is retried from its checkpoint or marked errored."""
        for trial_id in self._executor.running():
            code = self._poll(trial_id)
            if code is None:
                continue
            trial = self._service.get_trial(trial_id)
            hung = self._hung.pop(trial_id, None)
            if trial.state not in (TrialState.RUNNING, TrialState.ERRORED):
                continue
            reported = trial.error if trial.state == TrialState.ERRORED else None
            reason = hung or reported or self._executor.describe_exit(trial_id, code)
            retried = self._service.fail_or_retry(
                trial_id, reason=f"{reason}\n{self._log_tail(trial)}", max_restarts=max_restarts
            )
            logger.warning(
                "trial %d: %s; %s", trial.number, reason, "retrying" if retried else "errored"
            )

    def _watch_heartbeats(self) -> None:
        now = datetime.now(UTC)
        for trial_id in self._executor.running():
            if trial_id in self._hung:
                continue
            if self._executor.waiting(trial_id):  # queued by the cluster: not silent
                self._waiting.add(trial_id)
                continue
            if trial_id in self._waiting:  # started just now: silence counts from here
                self._waiting.discard(trial_id)
                self._service.update_trial(trial_id, last_heartbeat_at=now)
                continue
            trial = self._service.get_trial(trial_id)
            if trial.state != TrialState.RUNNING or trial.last_heartbeat_at is None:
                continue
            silent_s = (now - trial.last_heartbeat_at).total_seconds()
            if silent_s > self._settings.heartbeat_timeout_s:
                self._executor.kill(trial_id)
                self._hung[trial_id] = (
                    f"worker sent no heartbeat for {silent_s:.0f} s (limit "
                    f"{self._settings.heartbeat_timeout_s:.0f} s, TRAINYARD_HEARTBEAT_TIMEOUT_S); "
                    "it was killed as hung"
                )

    def _finished(self, experiment_id: int) -> bool:
        if self._executor.running() or not self._search_exhausted:
            return False
        trials = self._service.list_trials(experiment_id)
        # A trial paused by a signal from outside (a cluster's time limit, a preemption, a
        # failing node) while the experiment runs is requeued on the next tick, not done.
        return bool(trials) and all(
            t.state.is_finished() and t.state is not TrialState.PAUSED for t in trials
        )

    def _finish(self, experiment_id: int) -> ExperimentState:
        trials = self._service.list_trials(experiment_id)
        num_errored = sum(t.state == TrialState.ERRORED for t in trials)
        if num_errored == len(trials):
            state, message = ExperimentState.ERRORED, f"all {len(trials)} trial(s) errored"
        else:
            state = ExperimentState.COMPLETED
            message = f"{num_errored} of {len(trials)} trial(s) errored" if num_errored else None
        self._service.set_experiment_state(experiment_id, state, message)
        return state

    # -- pausing, killing and resuming -------------------------------------------------------

    def _stop_workers(self, experiment_id: int, state: ExperimentState, *, graceful: bool) -> None:
        """Graceful: SIGTERM, workers checkpoint and exit; stragglers are killed after a grace."""
        self._service.set_experiment_state(experiment_id, state)
        for trial_id in self._executor.running():
            (self._executor.stop if graceful else self._executor.kill)(trial_id)
        deadline = time.monotonic() + self._settings.stop_grace_s
        while self._executor.running() and time.monotonic() < deadline:
            for trial_id in self._executor.running():
                self._poll(trial_id)
            time.sleep(0.1)
        for trial_id in self._executor.running():
            self._executor.kill(trial_id)
            self._poll(trial_id)
        final = TrialState.PAUSED if state == ExperimentState.PAUSED else TrialState.CANCELED
        for trial in self._service.list_trials(experiment_id):
            if trial.state in (TrialState.RUNNING, TrialState.QUEUED) or (
                final == TrialState.CANCELED and trial.state == TrialState.PAUSED
            ):
                self._service.update_trial(trial.id, state=final)

    def _resumed_after_pause(self, experiment_id: int) -> bool:
        """After `trainyard activate`, paused trials go back to the queue."""
        running = self._executor.running()  # a stopped worker may not have exited yet
        paused = [
            t
            for t in self._service.list_trials(experiment_id)
            if t.state == TrialState.PAUSED and t.id not in running
        ]
        for trial in paused:
            self._service.update_trial(trial.id, state=TrialState.QUEUED)
        return bool(paused)

    def _requeue_unfinished(self, experiment_id: int) -> None:
        """On resume, unfinished trials go back to the queue; orphaned workers are ended first."""
        for trial in self._service.list_trials(experiment_id):
            if trial.state not in _RESUMABLE:
                continue
            self._service.end_attempt(trial.id)
            if trial.state is TrialState.RUNNING:
                self._executor.end_leftover(trial.id, trial.worker_pid)
            self._service.update_trial(trial.id, state=TrialState.QUEUED)

    def _poll(self, trial_id: int) -> int | None:
        """The executor's poll; once the workers have exited, their attempt is over."""
        code = self._executor.poll(trial_id)
        if code is not None:
            self._service.end_attempt(trial_id)
        return code

    def _log_tail(self, trial: TrialOut) -> str:
        if not trial.log_path or not Path(trial.log_path).exists():
            return "(no worker log was written)"
        lines = Path(trial.log_path).read_text(errors="replace").splitlines()
        tail = lines[-self._settings.log_tail_lines :]
        return f"last {len(tail)} line(s) of {trial.log_path}:\n" + "\n".join(tail)
