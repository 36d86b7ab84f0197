"""From a facility's pool to the executor that runs an experiment's trials there."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trainyard.config import load_experiment
from trainyard.config.facility import FacilityConfig, load_facility
from trainyard.config.schema import ResourcesSpec
from trainyard.errors import ExecutorError, TrainyardError
from trainyard.executors.base import Executor
from trainyard.executors.fork_server import ForkServer
from trainyard.executors.local import LocalExecutor, cpu_thread_policy

if TYPE_CHECKING:
    from trainyard.executors.kubernetes import KubernetesExecutor


def executor_for_pool(
    facility: FacilityConfig,
    resources: ResourcesSpec,
    *,
    experiment: str,
    fork_workers: bool,
    warm_fork_server: ForkServer | None = None,
) -> Executor:
    """The executor of the pool named by `resources.pool`, checked against the trials' size.

    `warm_fork_server` (see `start_fork_server_early`) becomes a local executor's fork server;
    a pool that does not fork workers closes it.

    Raises:
        ConfigError: no such pool, or the trials do not fit it.
        ExecutorError: the pool's cluster cannot be reached or refuses such jobs.
    """
    pool = facility.pool(resources.pool)
    if pool.executor != "local" and warm_fork_server is not None:
        warm_fork_server.close()
    if pool.kubernetes is not None:
        executor = _kubernetes_executor(facility, resources.pool, experiment=experiment)
        executor.check(resources.slots_per_trial)
        return executor
    if pool.slurm is not None:
        from trainyard.executors.slurm import SlurmExecutor

        executor = SlurmExecutor(
            pool=resources.pool, spec=pool.slurm, experiment=experiment, source=facility.source
        )
        executor.check(resources.slots_per_trial)
        return executor
    return LocalExecutor.for_this_machine(
        max_concurrent_trials=resources.max_concurrent_trials,
        slots_per_trial=resources.slots_per_trial,
        fork_workers=fork_workers,
        warm_fork_server=warm_fork_server,
    )


def start_fork_server_early(file: Path, *, facility_file: Path | None) -> ForkServer | None:
    """The worker fork server for a new experiment on a local pool, started before `trainyard
    run` imports torch and the Master: the server's imports (seconds) then run beside the
    CLI's on another core instead of after them, and the first trial starts that much sooner.
    None for a SLURM pool, or when the files do not load (the run's own checks report it).
    """
    try:
        pool = load_facility(facility_file).pool(load_experiment(file).resources.pool)
    except TrainyardError:
        return None
    return None if pool.executor != "local" else ForkServer(env=cpu_thread_policy())


def _kubernetes_executor(
    facility: FacilityConfig, pool: str, *, experiment: str
) -> KubernetesExecutor:
    """The Kubernetes pool's executor; its client library is an optional extra."""
    spec = facility.pools[pool].kubernetes
    assert spec is not None, "only called for kubernetes pools"
    try:
        from trainyard.executors.kubernetes import KubernetesExecutor
    except ImportError as err:
        raise ExecutorError(
            f"pool {pool!r} is a Kubernetes pool, which needs the Kubernetes client: "
            f"pip install 'trainyard[kubernetes]' ({err})"
        ) from err
    return KubernetesExecutor(pool=pool, spec=spec, experiment=experiment, source=facility.source)
