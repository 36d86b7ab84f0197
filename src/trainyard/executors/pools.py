"""From a facility's pool to the executor that runs an experiment's trials there."""

from __future__ import annotations

from trainyard.config.facility import FacilityConfig
from trainyard.config.schema import ResourcesSpec
from trainyard.executors.base import Executor
from trainyard.executors.local import LocalExecutor


def executor_for_pool(
    facility: FacilityConfig, resources: ResourcesSpec, *, experiment: str, fork_workers: bool
) -> Executor:
    """The executor of the pool named by `resources.pool`, checked against the trials' size.

    Raises:
        ConfigError: no such pool, or the trials do not fit it.
        ExecutorError: the pool's cluster cannot be reached or refuses such jobs.
    """
    pool = facility.pool(resources.pool)
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
    )
