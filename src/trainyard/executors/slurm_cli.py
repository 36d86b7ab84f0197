"""SLURM's commands, run and read: sbatch, squeue --json, scontrol, scancel, sinfo.

Kept apart from the executor so that what SLURM prints, and how each version prints it, is
parsed in one place. Nothing here needs a SLURM library: the commands are found on PATH when
first used, and a missing one is an error that names it and the package that has it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from trainyard.errors import ExecutorError

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60.0
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
"""Job states after which no process of the job is left (COMPLETING is not one of them)."""
QUEUED_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD"})
VANISHED = "VANISHED"
"""Our own state for a job that slurmctld no longer knows (purged after MinJobAge)."""


@dataclass(frozen=True)
class JobStatus:
    """What slurmctld says about one job."""

    job_id: int
    state: str
    """Base state (RUNNING, COMPLETED, NODE_FAIL, ...), or VANISHED."""
    return_code: int = 0
    """Exit status of the batch script, when it exited."""
    signal: int = 0
    """Signal that ended the batch script, or 0."""
    reason: str = ""
    nodes: str = ""
    name: str = ""
    output: str = ""
    """The job's standard output file."""

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES or self.state == VANISHED

    @property
    def queued(self) -> bool:
        return self.state in QUEUED_STATES


def run(
    args: list[str], *, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one SLURM command; with `check`, a failure is an ExecutorError with its stderr.

    Raises:
        ExecutorError: the command is not on PATH, did not answer in time, or (with
            `check`) exited with an error.
    """
    executable = shutil.which(args[0])
    if executable is None:
        raise ExecutorError(
            f"`{args[0]}` is not on PATH, and SLURM pools need SLURM's client commands "
            "(sbatch, squeue, scontrol, scancel, sinfo); install them (Debian/Ubuntu: "
            "apt-get install slurm-client, or slurm-wlm for a whole cluster) or load your "
            "site's SLURM module, then run trainyard again"
        )
    try:
        result = subprocess.run(
            [executable, *args[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ExecutorError(
            f"`{' '.join(args[:2])}` did not answer within {COMMAND_TIMEOUT_S:.0f} s; "
            "is slurmctld reachable? (`scontrol ping`)"
        ) from err
    if check and result.returncode != 0:
        raise ExecutorError(f"`{' '.join(args)}` failed: {_message(result)}")
    return result


def queue() -> dict[int, JobStatus]:
    """Every job slurmctld knows, finished ones included until MinJobAge purges them.

    squeue --json ignores its filter options in SLURM 22.05, so callers filter by job id.
    """
    payload = json.loads(run(["squeue", "--json"]).stdout)
    jobs: dict[int, JobStatus] = {}
    for job in payload.get("jobs", []):
        status = _from_squeue(job)
        jobs[status.job_id] = status
    return jobs


def job(job_id: int) -> JobStatus:
    """One job from `scontrol show job -o` (for jobs squeue no longer lists)."""
    result = run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr + result.stdout:
            return JobStatus(job_id=job_id, state=VANISHED)
        raise ExecutorError(f"`scontrol show job {job_id}` failed: {_message(result)}")
    fields = dict(re.findall(r"(\w+)=(\S*)", result.stdout))
    code, _, signal = fields.get("ExitCode", "0:0").partition(":")
    return JobStatus(
        job_id=job_id,
        state=fields.get("JobState", VANISHED),
        return_code=int(code or 0),
        signal=int(signal or 0),
        reason=fields.get("Reason", ""),
        nodes=fields.get("NodeList", ""),
        name=fields.get("JobName", ""),
        output=fields.get("StdOut", ""),
    )


def partition_gpus(partition: str) -> list[int] | None:
    """GPUs per node of each node type in `partition`; None when there is no such partition."""
    result = run(["sinfo", "--noheader", f"--partition={partition}", "--format=%R|%G"])
    counts = []
    for line in result.stdout.splitlines():
        name, _, gres = line.partition("|")
        if name.strip() == partition:
            counts.append(sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres)))
    return counts or None


def partitions() -> list[str]:
    """Names of every partition of the cluster."""
    result = run(["sinfo", "--noheader", "--format=%R"])
    return sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})


def _from_squeue(job: dict[str, Any]) -> JobStatus:
    """One job of squeue's JSON, as SLURM 22.05 writes it or in the later layout."""
    states = job.get("job_state", "")
    states = states if isinstance(states, list) else [states]
    base = next((s for s in states if s in FINAL_STATES), states[0] if states else "")
    if "COMPLETING" in states:
        base = "COMPLETING"
    exit_code = job.get("exit_code", 0)
    if isinstance(exit_code, dict):  # SLURM >= 23.02: {"return_code": {...}, "signal": {...}}
        return_code = _number(exit_code.get("return_code"))
        signal = _number((exit_code.get("signal") or {}).get("id"))
    else:  # SLURM 22.05: the wait status of the batch script
        return_code, signal = (int(exit_code) >> 8) & 0xFF, int(exit_code) & 0x7F
    return JobStatus(
        job_id=int(job["job_id"]),
        state=base,
        return_code=return_code,
        signal=signal,
        reason=str(job.get("state_reason", "")),
        nodes=str(job.get("nodes", "")),
        name=str(job.get("name", "")),
        output=str(job.get("standard_output", "")),
    )


def _number(value: Any) -> int:
    """SLURM >= 23.02 writes numbers as {"set": true, "number": N}."""
    if isinstance(value, dict):
        return int(value.get("number") or 0)
    return int(value or 0)


def _message(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout).strip()
    return text or f"exit status {result.returncode} and no message"
