"""A server's scheduling loop: every active experiment runs at once, sharing each pool's slots.

Each experiment gets an `ExperimentRunner` in a thread of its own, the same runner that
`trainyard run` drives in its process, on an `ExperimentSlots` view of its pool
(master/pool_share.py). Threads, not one loop ticking every runner: a runner blocks while it
pauses or kills (up to TRAINYARD_STOP_GRACE_S for workers to checkpoint), while a searcher
proposes trials (Optuna's samplers) and while SLURM answers; in a thread each of those delays
only its own experiment. The loop itself only decides shares: every tick, each pool's slots
are split between the experiments that want them by weighted max-min
(`scheduler.fair_share.split_offer`, equal weights until projects and shares exist).

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
from trainyard.executors.base import Executor
from trainyard.executors.pools import executor_for_pool
from trainyard.master.packs import pack_size
from trainyard.master.pool_share import ExperimentSlots, PoolShare
from trainyard.master.preflight import preflight
from trainyard.master.runner import ExperimentRunner, RunAbandoned
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentOut, ExperimentState
from trainyard.scheduler.fair_share import ExperimentDemand, split_offer
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


class FacilityLoop:
    """Runs every active experiment of the store on the facility's pools."""

    def __init__(
        self,
        *,
        service: MasterService,
        facility: FacilityConfig,
        settings: Settings,
        master_url: str,
    ) -> None:
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
        """
        executor = self._check_executor(config)
        try:
            preflight(config, pool_capacity=executor.capacity())
            pack_size(config, executor)
        finally:
            executor.close()
        created = self._service.create_experiment(config, project=project, owner_id=owner_id)
        return self._service.get_experiment(created)

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
        self._runs[experiment_id] = _Run(runner=runner, thread=thread, slots=slots, pool=pool)
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
        """Each pool's slots split between its experiments by what each wants now."""
        by_pool: dict[str, list[ExperimentDemand]] = {}
        for experiment_id, run in self._runs.items():
            try:
                wanted = run.runner.wanted_slots(experiment_id)
            except Exception:
                wanted = 0
            by_pool.setdefault(run.pool.name, []).append(ExperimentDemand(experiment_id, wanted))
        for name, demands in by_pool.items():
            pool = self._pools[name]
            pool.set_offers(split_offer(pool.capacity, demands))

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
