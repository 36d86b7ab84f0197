"""Run trials as SLURM batch jobs: one `sbatch` per attempt, the workers started by `srun`.

SLURM places the workers; trainyard only shapes the job. A trial of N slots on a pool with G
slots per node asks for ceil(N / G) nodes with min(N, G) tasks (and GPUs) each, one worker
rank per task. The batch script (templates/slurm_job.sh) runs the pool's set-up lines, then
`srun` the workers; for several ranks it exports torch.distributed's variables from SLURM's
own (RANK from SLURM_PROCID, MASTER_ADDR the job's first node, MASTER_PORT from the job id).

Ownership and recovery: jobs are submitted with --no-requeue, so SLURM never restarts a
trial behind the runner's back. Workers that SLURM signals (a time limit ahead, a preemption,
a node taken down) checkpoint and report a pause, and the runner requeues the trial; a job
that SLURM ends outright (node failure) is reported by `poll` with a code of its own (see
EXIT_CODES) and retried like any crash. Either way a new job resumes from the trial's last
checkpoint. A job left by an earlier Master is ended before its trials run again, since its
workers would train beside the new attempt: the runner's restart path hands `end_leftover`
the job id it stored as the trial's worker key, and a launch also cancels jobs of the same
trial (same name and log file) that an earlier Master submitted but never recorded.

Packs (docs/packing.md): a launch whose environment names several trials is one job of one
slot, named after its host trial and writing the host's log, whose one worker trains them
all; the job id is the pack's worker key, so joins, adoption and a restarted Master's clean-up
find the pack by it. The members' credentials travel as the solo trial's does, in the job's
environment (sbatch --export=ALL), never on a command line or in the batch script.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from trainyard.config.facility import SlurmPoolSpec
from trainyard.errors import ConfigError, ExecutorError
from trainyard.executors import slurm_cli
from trainyard.executors.base import INFRASTRUCTURE_EXIT, Executor, WorkerLaunch
from trainyard.executors.slurm_cli import JobStatus
from trainyard.executors.slurm_job import JobShape, batch_script, job_shape, sbatch_options
from trainyard.protocol import PACK_TRIAL_IDS_ENV
from trainyard.suggest import did_you_mean

logger = logging.getLogger(__name__)

LEFTOVER_END_TIMEOUT_S = 60.0
"""How long `end_leftover` waits for a cancelled job to leave its nodes (KillWait is 30 s
by default)."""

EXIT_CODES = {
    "CANCELLED": INFRASTRUCTURE_EXIT + 1,
    "TIMEOUT": INFRASTRUCTURE_EXIT + 2,
    "NODE_FAIL": INFRASTRUCTURE_EXIT + 3,
    "PREEMPTED": INFRASTRUCTURE_EXIT + 4,
    "OUT_OF_MEMORY": INFRASTRUCTURE_EXIT + 5,
    "BOOT_FAIL": INFRASTRUCTURE_EXIT + 6,
    "DEADLINE": INFRASTRUCTURE_EXIT + 7,
    "FAILED": INFRASTRUCTURE_EXIT + 8,
    slurm_cli.VANISHED: INFRASTRUCTURE_EXIT + 9,
}
"""poll's codes for jobs that SLURM ended (FAILED: without an exit status of the workers)."""

_MEANINGS = {
    "CANCELLED": "was cancelled (scancel, by trainyard, you or an administrator)",
    "TIMEOUT": "reached its time limit ({time_limit}, `time_limit` of pool {pool!r})",
    "NODE_FAIL": "lost a node (node failure)",
    "PREEMPTED": "was preempted by a job of higher priority",
    "OUT_OF_MEMORY": "ran out of memory; raise mem_per_gpu or mem_per_task of pool {pool!r}",
    "BOOT_FAIL": "could not boot its nodes",
    "DEADLINE": "reached its deadline",
    "FAILED": "failed before its workers ran",
    slurm_cli.VANISHED: "is no longer known to slurmctld (ended more than MinJobAge ago)",
}


@dataclass
class _Job:
    job_id: int
    num_slots: int


class SlurmExecutor(Executor):
    """Submits each trial as a batch job to one pool's partition and watches it with squeue.

    Args:
        pool: the pool's name in the facility file (for messages).
        spec: the pool's `slurm:` section.
        experiment: the experiment's name, for job names (trainyard-<experiment>-<trial id>).
        source: where the pool was defined, for messages.
    """

    name = "slurm"
    runs_packs = True

    def __init__(self, *, pool: str, spec: SlurmPoolSpec, experiment: str, source: str) -> None:
        self._pool = pool
        self._spec = spec
        self._experiment = experiment
        self._source = source
        self._jobs: dict[int, _Job] = {}
        self._ended: dict[int, JobStatus] = {}
        self._queue: dict[int, JobStatus] = {}
        self._queue_read_at = -math.inf

    def check(self, slots_per_trial: int) -> None:
        """Fail now, before anything is queued, if this pool cannot run such trials.

        Raises:
            ConfigError: the trial does not fit the pool, or the pool does not match the
                cluster (no such partition, fewer GPUs per node than gpus_per_node).
            ExecutorError: SLURM's commands are missing, or sbatch refuses the job's shape.
        """
        shape = self.job_shape(slots_per_trial)
        where = f"`pools.{self._pool}.slurm"
        gpus = slurm_cli.partition_gpus(self._spec.partition)
        if gpus is None:
            names = slurm_cli.partitions()
            raise ConfigError(
                [
                    f"{where}.partition`: partition {self._spec.partition!r} does not exist "
                    f"on this cluster; {did_you_mean(self._spec.partition, names)}"
                    f"partitions: {', '.join(names) or 'none'}"
                ],
                source=self._source,
            )
        if self._spec.gpus_per_node > max(gpus):
            raise ConfigError(
                [
                    f"{where}.gpus_per_node`: pool {self._pool!r} has gpus_per_node "
                    f"{self._spec.gpus_per_node} but the nodes of partition "
                    f"{self._spec.partition!r} have at most {max(gpus)} GPU(s) (sinfo); set "
                    "gpus_per_node to what one node has (larger trials span nodes)"
                ],
                source=self._source,
            )
        name = f"trainyard-{self._experiment}-check"
        options = sbatch_options(self._spec, shape, name=name, log_path=Path("/dev/null"))
        args = ["sbatch", "--test-only", *options]
        result = slurm_cli.run([*args, "--wrap=true"], check=False)
        if result.returncode != 0:
            raise ExecutorError(
                self._refusal(f"a trial of {slots_per_trial} slot(s)", result, args)
            )

    def job_shape(self, num_slots: int) -> JobShape:
        """Nodes and tasks per node for a trial (see slurm_job.job_shape).

        Raises:
            ConfigError: the trial does not fit the pool.
        """
        return job_shape(self._spec, num_slots, pool=self._pool, source=self._source)

    # -- the Executor contract -----------------------------------------------------------------

    def capacity(self) -> int:
        return self._spec.max_nodes * self._spec.slots_per_node

    def free_slots(self) -> int:
        return self.capacity() - sum(job.num_slots for job in self._jobs.values())

    def launch(self, launch: WorkerLaunch) -> None:
        if launch.trial_id in self._jobs:
            return
        if launch.num_slots > self.free_slots():
            raise ExecutorError(
                f"trial {launch.trial_id} needs {launch.num_slots} slot(s) but pool "
                f"{self._pool!r} has {self.free_slots()} of {self.capacity()} free"
            )
        shape = self.job_shape(launch.num_slots)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._cancel_leftovers(launch)
        script = launch.log_path.parent / "slurm-job.sh"
        script.write_text(
            batch_script(
                self._spec,
                pool=self._pool,
                experiment=self._experiment,
                trial_id=launch.trial_id,
                num_slots=launch.num_slots,
                pack=[int(i) for i in launch.env.get(PACK_TRIAL_IDS_ENV, "").split(",") if i],
                command=launch.command,
                workdir=launch.workdir,
            )
        )
        name = self._job_name(launch.trial_id)
        options = sbatch_options(self._spec, shape, name=name, log_path=launch.log_path)
        args = ["sbatch", "--parsable", *options]
        result = slurm_cli.run([*args, str(script)], env={**os.environ, **launch.env}, check=False)
        if result.returncode != 0:
            raise ExecutorError(self._refusal(f"trial {launch.trial_id}", result, args))
        job_id = int(result.stdout.strip().split(";")[0])
        self._jobs[launch.trial_id] = _Job(job_id=job_id, num_slots=launch.num_slots)
        self._queue_read_at = -math.inf  # the next status must include the new job
        logger.info(
            "trial %d: SLURM job %d (%d node(s) x %d task(s), partition %s)",
            launch.trial_id,
            job_id,
            shape.nodes,
            shape.tasks_per_node,
            self._spec.partition,
        )

    def poll(self, trial_id: int) -> int | None:
        job = self._jobs.get(trial_id)
        if job is None:
            raise ExecutorError(f"trial {trial_id} is not running on pool {self._pool!r}")
        status = self._status(job.job_id)
        if status is None or not status.finished:
            return None
        del self._jobs[trial_id]
        self._ended[trial_id] = status
        if status.state == "COMPLETED":
            return 0
        if status.state == "FAILED" and (status.return_code or status.signal):
            return -status.signal if status.signal else status.return_code
        return EXIT_CODES.get(status.state, EXIT_CODES["FAILED"])

    def waiting(self, trial_id: int) -> bool:
        job = self._jobs.get(trial_id)
        status = self._status(job.job_id) if job else None
        return status is not None and status.queued

    def describe_exit(self, trial_id: int, code: int) -> str:
        status = self._ended.pop(trial_id, None)
        if status is None or code < INFRASTRUCTURE_EXIT:
            prefix = f"SLURM job {status.job_id}: " if status else ""
            return prefix + super().describe_exit(trial_id, code)
        meaning = _MEANINGS.get(status.state, f"ended {status.state}").format(
            time_limit=self._spec.time_limit, pool=self._pool
        )
        where = f" on {status.nodes}" if status.nodes else ""
        reason = f" (reason: {status.reason})" if status.reason not in ("", "None") else ""
        return f"SLURM job {status.job_id}{where} {meaning}{reason}"

    def stop(self, trial_id: int) -> None:
        """SIGTERM to the workers' step only: signalling the batch shell (--full) would reach
        srun too, which answers SIGTERM by killing the step before any checkpoint."""
        job = self._jobs.get(trial_id)
        if job is None:
            return
        if self.waiting(trial_id):  # nothing started, nothing to checkpoint
            self._scancel(job.job_id)
        else:
            self._scancel(job.job_id, "--signal=TERM")

    def kill(self, trial_id: int) -> None:
        job = self._jobs.get(trial_id)
        if job is not None:
            self._scancel(job.job_id)

    def running(self) -> list[int]:
        return list(self._jobs)

    def worker_key(self, trial_id: int) -> int | None:
        """The trial's (or its pack's) batch job id."""
        job = self._jobs.get(trial_id)
        return job.job_id if job else None

    def device_kind(self) -> str:
        return "cuda" if self._spec.gpus_per_node else "cpu"

    def end_leftover(self, trial_id: int, worker_key: int | None) -> None:
        """Cancel the job `worker_key` that an earlier Master submitted for this trial (alone,
        or for a pack the trial was in, as its host or not), if slurmctld still runs it as a
        job of this experiment (by its name, which job ids come back only after wrapping and
        another experiment's name cannot match), and wait
        until it has left its nodes: its workers may still write a checkpoint as they go
        (SLURM sends SIGTERM, then SIGKILL after KillWait), which the new attempt must find
        finished."""
        if worker_key is None:
            return
        status = self._job_now(worker_key)
        name = rf"trainyard-{re.escape(self._experiment)}-\d+"
        ours = status is not None and re.fullmatch(name, status.name)
        if status is None or status.finished or not ours:
            return
        logger.warning("trial %d: ending leftover SLURM job %d", trial_id, worker_key)
        self._scancel(worker_key)
        deadline, pause = time.monotonic() + LEFTOVER_END_TIMEOUT_S, 0.2
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(2 * pause, 2.0)
            status = self._job_now(worker_key)
            if status is not None and status.finished:
                return
        logger.warning(
            "SLURM job %d has not left its nodes %.0f s after scancel; going on",
            worker_key,
            LEFTOVER_END_TIMEOUT_S,
        )

    # -- helpers -------------------------------------------------------------------------------

    def _status(self, job_id: int) -> JobStatus | None:
        """The job's state, from one squeue per status_interval_s for all jobs; None while
        slurmctld does not answer (the job is assumed unchanged until it does)."""
        now = time.monotonic()
        try:
            if now - self._queue_read_at >= self._spec.status_interval_s:
                self._queue = slurm_cli.queue()
                self._queue_read_at = now
            return self._queue.get(job_id) or slurm_cli.job(job_id)
        except ExecutorError as err:
            if "not on PATH" in str(err):
                raise
            logger.warning("cannot read the state of SLURM job %d: %s", job_id, err)
            return None

    def _job_now(self, job_id: int) -> JobStatus | None:
        """The job's state from slurmctld now (scontrol), not squeue's last reading; None
        while slurmctld does not answer."""
        try:
            return slurm_cli.job(job_id)
        except ExecutorError as err:
            if "not on PATH" in str(err):
                raise
            logger.warning("cannot read the state of SLURM job %d: %s", job_id, err)
            return None

    def _cancel_leftovers(self, launch: WorkerLaunch) -> None:
        """Cancel jobs of this same trial (same name and log file) that an earlier Master
        submitted: their workers hold that Master's token and would train alongside ours."""
        name, output = self._job_name(launch.trial_id), str(launch.log_path)
        for status in slurm_cli.queue().values():
            if status.name == name and status.output == output and not status.finished:
                logger.warning(
                    "trial %d: cancelling leftover SLURM job %d", launch.trial_id, status.job_id
                )
                self._scancel(status.job_id)

    def _scancel(self, job_id: int, *options: str) -> None:
        result = slurm_cli.run(["scancel", *options, str(job_id)], check=False)
        if result.returncode != 0:
            logger.warning("scancel %s %d: %s", " ".join(options), job_id, result.stderr.strip())

    def _job_name(self, trial_id: int) -> str:
        return f"trainyard-{self._experiment}-{trial_id}"

    def _refusal(
        self, what: str, result: subprocess.CompletedProcess[str], args: list[str]
    ) -> str:
        """sbatch's own words, the options it was given, and which of them are the pool's."""
        message = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        own = self._spec.sbatch_options
        blame = f"; the pool's own sbatch_options were {shlex.join(own)}" if own else ""
        return (
            f"sbatch refused {what} of pool {self._pool!r} ({self._source}): {message}\n"
            f"  submitted as: {shlex.join(args)}{blame}\n"
            f"  fix the pool in {self._source} (partition, account, qos, limits, "
            "sbatch_options), or lower the experiment's resources.slots_per_trial"
        )
