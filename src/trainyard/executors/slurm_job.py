"""What one trial's SLURM job looks like: its shape, sbatch's options and the batch script.

Pure functions of the pool and the trial, so that what trainyard asks SLURM for can be read
(and tested) apart from submitting and watching jobs (slurm.py).
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from trainyard.config.facility import SlurmPoolSpec
from trainyard.errors import ConfigError

WORKER_MODULE = "trainyard.worker"
RENDEZVOUS_PORTS = (20000, 20000)
"""MASTER_PORT = first + job id % count: jobs that share a node get different ports."""

_RENDEZVOUS = f"""\
# torch.distributed: rank 0 on the job's first node, a port that follows from the job id.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR MASTER_PORT=$(({RENDEZVOUS_PORTS[0]} + SLURM_JOB_ID % {RENDEZVOUS_PORTS[1]}))"""
_RANK_ENV = (
    "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
    "LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE"
)


class _ScriptTemplate(Template):
    delimiter = "@"  # the script is bash, full of $


@dataclass(frozen=True)
class JobShape:
    """How a trial's slots are laid out over nodes."""

    nodes: int
    tasks_per_node: int


def job_shape(spec: SlurmPoolSpec, num_slots: int, *, pool: str, source: str) -> JobShape:
    """Nodes and tasks per node for a trial of `num_slots` slots: ceil(N / G) nodes of
    min(N, G) tasks, G being the pool's slots per node.

    Raises:
        ConfigError: the trial needs more nodes than the pool allows, or does not fill whole
            nodes once it spans several.
    """
    per_node = spec.slots_per_node
    nodes = math.ceil(num_slots / per_node)
    max_nodes = spec.max_nodes_per_trial or spec.max_nodes
    size = "gpus_per_node" if spec.gpus_per_node else "tasks_per_node"
    problem = None
    if nodes > max_nodes:
        limit = "max_nodes_per_trial" if spec.max_nodes_per_trial else "max_nodes"
        problem = (
            f"{num_slots} slots per trial need {nodes} nodes of pool {pool!r} ({size} "
            f"{per_node} in {source}) but it gives a trial at most {max_nodes} ({limit}); "
            f"lower slots_per_trial to at most {max_nodes * per_node} or use a pool with "
            "larger nodes"
        )
    elif nodes > 1 and num_slots % per_node:
        problem = (
            f"{num_slots} slots per trial do not fill whole nodes of pool {pool!r} ({size} "
            f"{per_node}); use a multiple of {per_node}, or at most {per_node}"
        )
    if problem:
        raise ConfigError([f"`resources.slots_per_trial`: {problem}"], source="experiment file")
    return JobShape(nodes=nodes, tasks_per_node=min(num_slots, per_node))


def sbatch_options(
    spec: SlurmPoolSpec, shape: JobShape, *, name: str, log_path: Path
) -> list[str]:
    """sbatch's options for one job: the pool's resources for this shape, then the pool's own
    extra options (last, so that an operator can override any of trainyard's)."""
    options = [
        f"--partition={spec.partition}",
        f"--nodes={shape.nodes}",
        f"--ntasks-per-node={shape.tasks_per_node}",
    ]
    options += [f"--account={spec.account}"] if spec.account else []
    options += [f"--qos={spec.qos}"] if spec.qos else []
    if spec.gpus_per_node:
        options += [
            f"--gpus-per-node={shape.tasks_per_node}",
            f"--cpus-per-gpu={spec.cpus_per_gpu}",
        ]
        options += [f"--mem-per-gpu={spec.mem_per_gpu}"] if spec.mem_per_gpu else []
    else:
        options += [f"--cpus-per-task={spec.cpus_per_task}"]
        if spec.mem_per_task:
            per_cpu = math.ceil(memory_mib(spec.mem_per_task) / spec.cpus_per_task)
            options += [f"--mem-per-cpu={per_cpu}M"]
    if spec.time_limit:  # the workers checkpoint and stop before the limit; a new job goes on
        options += [f"--time={spec.time_limit}", f"--signal=TERM@{spec.stop_before_time_limit_s}"]
    options += [
        f"--job-name={name}",
        f"--output={log_path}",
        "--open-mode=append",
        "--no-requeue",
        "--export=ALL",
    ]
    return options + list(spec.sbatch_options)


def batch_script(
    spec: SlurmPoolSpec,
    *,
    pool: str,
    experiment: str,
    trial_id: int,
    num_slots: int,
    pack: Sequence[int] = (),
    command: Sequence[str] | None = None,
    workdir: Path | None = None,
) -> str:
    """The job's script (templates/slurm_job.sh): set-up lines, then `srun` the workers, or
    for a script trial its `command` (in `workdir`) once per task, with torchrun's variables
    also for one task. `pack`: a pack's trial ids, which the worker reads from its environment
    as it reads their credentials; named here for the reader only. No credential is ever
    written into the script."""
    python = spec.python or sys.executable
    container = shlex.split(spec.container or "")
    worker = [*container, python, "-m", WORKER_MODULE]
    # One rank failing ends the others; srun does not inherit sbatch's --cpus-per-task.
    srun_options = ["--kill-on-bad-exit=1", *spec.srun_options]
    if not spec.gpus_per_node:
        srun_options.insert(1, f"--cpus-per-task={spec.cpus_per_task}")
    if command is not None:
        task, rendezvous = _script_task(python, [*container, *command], workdir), _RENDEZVOUS
    elif num_slots == 1:
        task, rendezvous = shlex.join(worker), ""
    else:
        inner = f"{_RANK_ENV}; exec {shlex.join(worker)}"
        task, rendezvous = f"bash -c {shlex.quote(inner)}", _RENDEZVOUS
    template = resources.files("trainyard.executors").joinpath("templates/slurm_job.sh")
    ids = ", ".join(map(str, pack))
    trials = f"Trials {ids}, one pack in one worker," if pack else f"Trial id {trial_id}"
    return _ScriptTemplate(template.read_text()).substitute(
        trials=trials,
        experiment=experiment,
        pool=pool,
        num_slots=num_slots,
        setup="\n".join(spec.setup),
        threads=spec.cpus_per_gpu if spec.gpus_per_node else spec.cpus_per_task,
        rendezvous=rendezvous,
        srun_options=shlex.join(srun_options),
        task=task,
    )


def _script_task(python: str, command: list[str], workdir: Path | None) -> str:
    """One task of a script trial: its rank's variables, its folder, and `python` meaning the
    pool's interpreter (the one trainyard is installed in) when that is a path."""
    steps = [_RANK_ENV]
    if workdir is not None:
        steps.append(f"cd {shlex.quote(str(workdir))}")
    if "/" in python:
        steps.append(f"export PATH={shlex.quote(str(Path(python).parent))}:$PATH")
    steps.append(f"exec {shlex.join(command)}")
    return f"bash -c {shlex.quote('; '.join(steps))}"


def memory_mib(value: str) -> int:
    """A SLURM memory size (16G, 512M, or 2048 meaning megabytes) in MiB."""
    number, unit = int(value.rstrip("KMGT")), value[-1] if value[-1] in "KMGT" else "M"
    return max(1, number * {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}[unit] // 1024)
