"""A server's scheduling loop: every active experiment runs at once, sharing each pool's slots.

Each experiment gets an `ExperimentRunner` in a thread of its own, the same runner that
`trainyard run` drives in its process, on an `ExperimentSlots` view of its pool
(master/pool_share.py). Threads, not one loop ticking every runner: a runner blocks while it
pauses or kills (up to TRAINYARD_STOP_GRACE_S for workers to checkpoint), while a searcher
proposes trials (Optuna's samplers) and while SLURM answers; in a thread each of those delays
only its own experiment. The loop itself only decides shares: every tick, each pool's slots
are placed by `scheduler.placement.place` (quotas, priority tiers, projects' shares with
decayed usage, then each project's experiments by weight; master/project_shares.py feeds it
from the store), and, when the server file enables it, a starved project preempts trials of
experiments above their offer (`scheduler.preemption`): they checkpoint, and their runner
requeues them.

The store is the work list: experiments QUEUED or RUNNING get a runner, also after a restart
(the runner requeues their unfinished trials, which resume from their checkpoints). Stopping
the server pauses every runner (workers checkpoint) and puts the experiments it paused back to
QUEUED, so the next server start continues them; experiments a user paused stay PAUSED.

With several servers on one PostgreSQL only the leader ticks (master/leadership.py). A leader
that loses its lock calls `abandon`: its runners stop without touching workers or the store,
and the new leader's runners take the experiments over on the restart path above (ending the
leftover workers, resuming the trials from their checkpoints).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from trainyard.config import ExperimentConfig
from trainyard.config.facility import FacilityConfig
from trainyard.config.schema import ResourcesSpec
from trainyard.config.server import SharesSpec
from trainyard.executors.base import Executor
from trainyard.executors.pools import executor_for_pool
from trainyard.master.packs import pack_size
from trainyard.master.pool_share import ExperimentSlots, PoolShare
from trainyard.master.preflight import preflight
from trainyard.master.project_disk import ProjectDisk
from trainyard.master.project_shares import ProjectShares
from trainyard.master.runner import ExperimentRunner, RunAbandoned
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentOut, ExperimentState
from trainyard.scheduler.placement import ExperimentWant
from trainyard.scheduler.preemption import RunningTrial, preemptions
from trainyard.settings import Settings
from trainyard.store import Project, repository

logger = logging.getLogger(__name__)

_ACTIVE = (ExperimentState.QUEUED, ExperimentState.RUNNING)
SERVER_STOPPED = "the server stopped; the experiment continues when it starts again"


@dataclass
class _Run:
    """One experiment being run: its runner, the runner's thread and its view of the pool."""

    runner: ExperimentRunner
    thread: threading.Thread
    slots: ExperimentSlots
    pool: PoolShare
    project: str
    owner: str | None
    resources: ResourcesSpec


class FacilityLoop:
    """Runs every active experiment of the store on the facility's pools."""

    def __init__(
        self,
        *,
        service: MasterService,
        facility: FacilityConfig,
        settings: Settings,
        master_url: str,
        shares: SharesSpec | None = None,
    ) -> None:
        """`shares`: the server file's section (default: its defaults, preemption off)."""
        self._service = service
        self._facility = facility
        self._settings = settings
        self._master_url = master_url
        self._pools: dict[str, PoolShare] = {}
        self._runs: dict[int, _Run] = {}
        self._lock = threading.Lock()
        """Guards the runs (the loop's thread and stop)."""
        self._pools_lock = threading.Lock()
        """Guards the pools (the loop's thread and the API's submissions)."""
        spec = shares or SharesSpec()
        disk = ProjectDisk(settings.resolved_home(), refresh_s=spec.disk_usage_refresh_s)
        self.shares = ProjectShares(service.store, spec, disk)
        self._preempted: set[int] = set()
        """Workers told to checkpoint for a starved project, not yet exited."""

    # -- submitting ---------------------------------------------------------------------------

    def submit(
        self,
        config: ExperimentConfig,
        *,
        project: Project | None = None,
        owner_id: int | None = None,
    ) -> ExperimentOut:
        """Check an experiment as `trainyard run` does before storing it, then store it; the
        next tick starts it.

        Raises:
            ConfigError, DataError, ModelError: with the same messages `trainyard run` prints.
            ExecutorError: the pool's cluster cannot run such trials.
            PermissionDeniedError: the project may not use the pool.
            QuotaExceededError: a trial is larger than a quota, or the project is at its
                disk cap.
        """
        if project is not None:
            self.shares.check_submission(config, project)
        executor = self._check_executor(config)
        try:
            preflight(config, pool_capacity=executor.capacity())
            pack_size(config, executor)
        finally:
            executor.close()
        created = self._service.create_experiment(config, project=project, owner_id=owner_id)
        return self._service.get_experiment(created)

    def open_pools(self) -> list[PoolShare]:
        """The pools this server has opened (a follower's: none), for the pools page."""
        with self._pools_lock:
            return list(self._pools.values())

    def pool_names(self) -> list[str]:
        """The facility's pools, for checking a project's allowed pools."""
        return sorted(self._facility.pools)

    def _check_executor(self, config: ExperimentConfig) -> Executor:
        pool = self._facility.pool(config.resources.pool)  # names the pools when unknown
        if pool.slurm is not None:  # also checks the trials' size against the partition
            return self._open(config.resources, config.name)
        return self._pool(config.resources.pool).probe(config.name)

    # -- the loop -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Start runners for new or restarted experiments, forget ended ones, reshare slots."""
        with self._service.store.session() as session:
            active = repository.experiment_ids_in_states(session, _ACTIVE)
        with self._lock:
            for experiment_id in active:
                if experiment_id not in self._runs:
                    self._start(experiment_id)
            for experiment_id in [i for i, run in self._runs.items() if not run.thread.is_alive()]:
                run = self._runs.pop(experiment_id)
                run.pool.forget(experiment_id)
            self._share()

    def stop(self) -> None:
        """Pause every runner (workers checkpoint), wait, and queue what the server paused."""
        with self._lock:
            runs = dict(self._runs)
            self._runs.clear()
        paused_by_user = {
            i for i in runs if self._service.get_experiment(i).state == ExperimentState.PAUSED
        }
        for run in runs.values():
            run.runner.request_pause()
        for experiment_id, run in runs.items():
            run.thread.join()
            if experiment_id not in paused_by_user:
                state = self._service.get_experiment(experiment_id).state
                if state == ExperimentState.PAUSED:
                    self._service.set_experiment_state(
                        experiment_id, ExperimentState.QUEUED, SERVER_STOPPED
                    )
        for pool in self._pools.values():
            pool.close()

    def abandon(self) -> None:
        """This server no longer leads: stop every runner at its next tick, leaving workers
        and the store to the new leader. Not `stop`: pausing would write trial states that
        the new leader's runners own by now, and the new leader ends these workers itself
        (`Executor.end_leftover`) before it relaunches their trials."""
        with self._lock:
            runs = dict(self._runs)
            self._runs.clear()
        for run in runs.values():
            run.runner.request_abandon()
        for experiment_id, run in runs.items():
            run.thread.join()
            run.pool.forget(experiment_id)
        if runs:
            logger.warning("left %d experiment(s) to the new leader", len(runs))

    def _start(self, experiment_id: int) -> None:
        try:
            config = self._service.experiment_config(experiment_id)
            pool = self._pool(config.resources.pool)
        except Exception as err:  # a pool gone from the facility file, a config of another version
            self._fail(experiment_id, err)
            return
        project, owner = self.shares.describe(experiment_id)
        slots = pool.slots_for(experiment_id, config.name)
        runner = ExperimentRunner(
            service=self._service,
            executor=slots,
            settings=self._settings,
            master_url=self._master_url,
        )
        thread = threading.Thread(
            target=self._run,
            args=(experiment_id, runner, slots),
            name=f"experiment-{experiment_id}",
        )
        self._runs[experiment_id] = _Run(
            runner=runner,
            thread=thread,
            slots=slots,
            pool=pool,
            project=project,
            owner=owner,
            resources=config.resources,
        )
        thread.start()
        logger.info(
            "experiment %d (%s): running on pool %s", experiment_id, config.name, pool.name
        )

    def _run(self, experiment_id: int, runner: ExperimentRunner, slots: ExperimentSlots) -> None:
        try:
            state = runner.run(experiment_id)
            logger.info("experiment %d: %s", experiment_id, state)
        except RunAbandoned:
            logger.warning("experiment %d: left to the new leader", experiment_id)
        except Exception as err:  # one experiment's failure must not stop the server
            if runner.abandoned:  # the store is the new leader's now (or unreachable)
                logger.exception("experiment %d: failed while leaving it", experiment_id)
            else:
                self._fail(experiment_id, err)
        finally:
            slots.close()

    def _fail(self, experiment_id: int, err: Exception) -> None:
        logger.exception("experiment %d: the server could not run it", experiment_id)
        self._service.set_experiment_state(
            experiment_id, ExperimentState.ERRORED, f"the server could not run it: {err}"
        )

    def _share(self) -> None:
        """Place each pool's experiments (quotas, priorities, fair share), note who waits for
        a quota, and preempt for a starved project when the server file allows it."""
        by_pool: dict[str, list[ExperimentWant]] = {}
        for experiment_id, run in self._runs.items():
            try:
                wanted = run.runner.wanted_slots(experiment_id)
            except Exception:
                wanted = 0
            by_pool.setdefault(run.pool.name, []).append(
                ExperimentWant(
                    experiment_id=experiment_id,
                    project=run.project,
                    demand=wanted,
                    slots_per_trial=run.resources.slots_per_trial,
                    owner=run.owner,
                    weight=run.resources.weight,
                    held=run.pool.held(experiment_id),
                )
            )
        for name, wants in by_pool.items():
            pool = self._pools[name]
            placement = self.shares.place(name, pool.capacity, wants)
            pool.set_offers(placement.offers)
            self.shares.note_waits([w.experiment_id for w in wants], placement.waits)
            if self.shares.spec.preemption.enabled:
                self._preempt(pool, wants, placement.offers)

    def _preempt(
        self, pool: PoolShare, wants: list[ExperimentWant], offers: dict[int, int]
    ) -> None:
        """Tell the trials `preemptions` picks to checkpoint; their runners requeue them."""
        workers = {w.experiment_id: pool.running_since(w.experiment_id) for w in wants}
        self._preempted &= {worker for running in workers.values() for worker in running}
        held: dict[int, int] = {}
        running: list[RunningTrial] = []
        for experiment_id, trials in workers.items():
            held[experiment_id] = 0
            for worker, (slots, run_s) in trials.items():
                if worker not in self._preempted:  # those stopping count as free already
                    held[experiment_id] += slots
                    running.append(RunningTrial(worker, experiment_id, slots, run_s))
        minimum_s = self.shares.spec.preemption.min_run_minutes * 60
        for trial in preemptions(
            offers=offers,
            held=held,
            running=running,
            free=pool.capacity - sum(held.values()),
            min_run_s=minimum_s,
        ):
            experiment_id = next(t.experiment_id for t in running if t.trial_id == trial)
            logger.info(
                "trial %d of experiment %d: preempted for a project below its share "
                "(it checkpoints and is requeued)",
                trial,
                experiment_id,
            )
            self._preempted.add(trial)
            self._runs[experiment_id].slots.stop(trial)

    # -- pools --------------------------------------------------------------------------------

    def _pool(self, name: str) -> PoolShare:
        """The pool's share, opened on first use (a SLURM pool's cluster is asked then)."""
        with self._pools_lock:
            if name not in self._pools:
                spec = self._facility.pool(name)
                resources = ResourcesSpec(pool=name)
                self._pools[name] = PoolShare(
                    name,
                    open_executor=lambda experiment: self._open(resources, experiment),
                    shared=spec.slurm is None,
                )
            return self._pools[name]

    def _open(self, resources: ResourcesSpec, experiment: str) -> Executor:
        if self._facility.pool(resources.pool).slurm is not None:
            return executor_for_pool(
                self._facility, resources, experiment=experiment, fork_workers=False
            )
        # A local pool for every experiment: one slot per core (or per GPU).
        cores = len(os.sched_getaffinity(0))
        shared = ResourcesSpec(pool=resources.pool, max_concurrent_trials=cores)
        return executor_for_pool(
            self._facility, shared, experiment=experiment, fork_workers=self._settings.fork_workers
        )
