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

from trainyard.config.entrypoint import EntrypointSpec
from trainyard.executors import Executor, WorkerLaunch
from trainyard.executors.base import SlotsTaken
from trainyard.master.pack_roster import PackRoster, note_in_log
from trainyard.master.packs import pack_size
from trainyard.master.service import MasterService
from trainyard.master.worker_watch import WorkerWatch
from trainyard.protocol import (
    PACK_SIZE_ENV,
    PACK_TOKENS_ENV,
    PACK_TRIAL_IDS_ENV,
    ExperimentState,
    TrialOut,
    TrialState,
)
from trainyard.scheduler import LaunchRequest, plan_launches
from trainyard.settings import Settings

logger = logging.getLogger(__name__)

_RESUMABLE = {TrialState.QUEUED, TrialState.RUNNING, TrialState.PAUSED}


class RunAbandoned(Exception):
    """`run` stopped on `request_abandon`: its server no longer leads (master/leadership.py)."""


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
        self._abandon_requested = threading.Event()
        self._search_exhausted = False
        self._pack_size = 1
        self._max_concurrent_trials = 1
        self._packs = PackRoster(service)
        """The packed workers, by their host trial's id (the executor's name for them)."""
        self._watch = WorkerWatch(
            service=service, executor=executor, settings=settings, packs=self._packs
        )
        self._entrypoint: EntrypointSpec | None = None
        """The experiment's script, when its trials run the user's own command."""

    def wanted_slots(self, experiment_id: int) -> int:
        """Slots the experiment could use now (held, queued, and up to its concurrency while
        the searcher has more trials): its demand in a server's fair share of the pool."""
        config = self._service.experiment_config(experiment_id)
        spt, pack = config.resources.slots_per_trial, self._pack_size
        most = -(-config.resources.max_concurrent_trials // pack) * spt
        if not self._search_exhausted:
            return most
        held = len(self._executor.running()) * spt
        return min(most, held + -(-len(self._queued(experiment_id)) // pack) * spt)

    def request_pause(self) -> None:
        """Checkpoint every running trial and return PAUSED (safe from a signal handler)."""
        self._pause_requested.set()

    def request_abandon(self) -> None:
        """Stop `run` at its next tick without touching workers or the store: another Master
        now leads, and its runner ends these workers on its restart path (`end_leftover`)."""
        self._abandon_requested.set()

    @property
    def abandoned(self) -> bool:
        """Whether `request_abandon` was called: the store is no longer this runner's to write."""
        return self._abandon_requested.is_set()

    def run(
        self, experiment_id: int, *, on_tick: Callable[[], None] | None = None
    ) -> ExperimentState:
        """Run until every trial is finished, a pause was requested, or it was killed.

        Raises:
            RunAbandoned: after `request_abandon`.
        """
        self._requeue_unfinished(experiment_id)
        self._service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
        self._service.recover_searcher(experiment_id)
        config = self._service.experiment_config(experiment_id)
        self._pack_size = pack_size(config, self._executor)
        self._max_concurrent_trials = config.resources.max_concurrent_trials
        self._entrypoint = config.entrypoint
        while True:
            if self._abandon_requested.is_set():
                raise RunAbandoned(f"experiment {experiment_id}: another Master leads now")
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
            if self._pack_size > 1:  # members that joined a pack; claims of dead packs
                self._packs.adopt_joined(experiment_id)
            self._watch.reap(max_restarts=config.max_restarts, entrypoint=self._entrypoint)
            if self._pack_size > 1:
                self._packs.reap_orphans(experiment_id, self._executor, config.max_restarts)
            self._watch.watch_heartbeats()
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
        if self._pack_size > 1:
            self._fill_packs(experiment_id, max_concurrent_trials=resources.max_concurrent_trials)
            return
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
            self._launch([by_id[request.trial_id]], request.num_slots)

    def _fill_packs(self, experiment_id: int, *, max_concurrent_trials: int) -> None:
        """Up to `pack_size` queued trials per free slot, each group in one worker; a group
        of one is launched as an ordinary solo trial. max_concurrent_trials counts trials."""
        trials = self._service.list_trials(experiment_id)
        num_running = sum(t.state == TrialState.RUNNING for t in trials)
        # Places that members left in running packs are filled by the packs themselves
        # (joins, master/pack_joins.py): the first queued trials wait for them.
        places = self._packs.free_places(trials, self._pack_size)
        room = min(
            max_concurrent_trials - num_running,
            self._executor.free_slots() * self._pack_size + places,
        )
        queued = self._queued(experiment_id)
        if room > len(queued) and not self._search_exhausted:
            created = self._service.create_trials(experiment_id, num_free=room - len(queued))
            self._search_exhausted = not created
            queued = self._queued(experiment_id)
        queued = sorted(queued, key=lambda t: t.number)[min(places, max(room, 0)) : max(room, 0)]
        groups = [queued[i : i + self._pack_size] for i in range(0, len(queued), self._pack_size)]
        hosts = {group[0].id: group for group in groups}
        requests = [LaunchRequest(experiment_id, g[0].number, g[0].id, 1) for g in groups]
        for request in plan_launches(
            requests,
            free_slots=self._executor.free_slots(),
            room_per_experiment={experiment_id: len(groups)},
        ):
            self._launch(hosts[request.trial_id], 1)

    def _unclaim(self, trials: list[TrialOut]) -> None:
        if self._pack_size > 1:  # claimed in `_launch`: back to the queue
            self._packs.unclaim(trials)

    def _queued(self, experiment_id: int) -> list[TrialOut]:
        return [
            t for t in self._service.list_trials(experiment_id) if t.state == TrialState.QUEUED
        ]

    def _launch(self, trials: list[TrialOut], num_slots: int) -> None:
        """One worker for `trials`: a solo trial, or a pack whose first trial is its host
        (the executor knows the worker by the host's id and writes the host's log).

        A packed experiment's trials are claimed first (QUEUED -> RUNNING only while still
        queued and within max_concurrent_trials): a running pack may have taken one by a join.
        """
        if self._pack_size > 1:
            trials = self._packs.claim(trials, max_concurrent_trials=self._max_concurrent_trials)
            if not trials:
                return
        host = trials[0]
        assert host.log_path is not None, "trials get their log path when created"
        tokens = [self._service.issue_worker_token(t.id) for t in trials]
        env = {
            "TRAINYARD_MASTER_URL": self._master_url,
            "TRAINYARD_TOKEN": tokens[0],
            "TRAINYARD_TRIAL_ID": str(host.id),
        }
        if len(trials) > 1:
            env[PACK_TRIAL_IDS_ENV] = ",".join(str(t.id) for t in trials)
            env[PACK_TOKENS_ENV] = ",".join(tokens)
            env[PACK_SIZE_ENV] = str(self._pack_size)
        script = self._entrypoint
        try:
            self._executor.launch(
                WorkerLaunch(
                    trial_id=host.id,
                    num_slots=num_slots,
                    log_path=Path(host.log_path),
                    # The script's own variables first: trainyard's (checked reserved) win.
                    env={**script.environment, **env} if script else env,
                    command=tuple(script.command) if script else None,
                    workdir=Path(script.workdir) if script and script.workdir else None,
                )
            )
        except SlotsTaken as taken:  # a server's other experiment was quicker: try next tick
            logger.info("trial %d stays queued: %s", host.number, taken)
            self._unclaim(trials)
            return
        except BaseException:
            self._unclaim(trials)
            raise
        key = self._executor.worker_key(host.id)
        if len(trials) > 1:
            self._packs.add(host.id, [t.id for t in trials], key)
        for trial in trials:
            self._service.update_trial(
                trial.id,
                state=TrialState.RUNNING,
                worker_key=key,
                last_heartbeat_at=datetime.now(UTC),
            )
        if len(trials) > 1:
            numbers = ", ".join(str(t.number) for t in trials)
            logger.info(
                "trials %s: one packed worker (worker key %s), log %s", numbers, key, host.log_path
            )
            for trial in trials[1:]:
                note_in_log(
                    trial, f"trained in a pack with trials {numbers}; log: {host.log_path}"
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
                self._watch.poll(trial_id)
            time.sleep(0.1)
        for trial_id in self._executor.running():
            self._executor.kill(trial_id)
            self._watch.poll(trial_id)
        final = TrialState.PAUSED if state == ExperimentState.PAUSED else TrialState.CANCELED
        for trial in self._service.list_trials(experiment_id):
            if trial.state in (TrialState.RUNNING, TrialState.QUEUED) or (
                final == TrialState.CANCELED and trial.state == TrialState.PAUSED
            ):
                self._service.update_trial(trial.id, state=final)
                if final == TrialState.CANCELED:
                    self._service.track_trial_end(trial.id)

    def _resumed_after_pause(self, experiment_id: int) -> bool:
        """After `trainyard activate`, paused trials go back to the queue."""
        # A stopped worker may not have exited yet.
        running = {t for w in self._executor.running() for t in self._watch.members(w)}
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
        trials = self._service.list_trials(experiment_id)
        for trial in trials:
            if trial.state not in _RESUMABLE:
                continue
            self._service.end_attempt(trial.id)
            if trial.state is TrialState.RUNNING:
                self._executor.end_leftover(trial.id, trial.worker_key)
                # A local pack's worker is named after its host (a fork's name) or the trials
                # it started with (its environment), not after one that joined later: try the
                # trials of the experiment that ran under that worker key, the finished ones
                # too. (A SLURM job is found by its key alone; the repeats find it ended.)
                for named in trials:
                    if trial.worker_key is not None and named.worker_key == trial.worker_key:
                        self._executor.end_leftover(named.id, trial.worker_key)
            self._service.update_trial(trial.id, state=TrialState.QUEUED)
