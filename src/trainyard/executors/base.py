"""The one interface every backend implements: launch, poll, stop, kill.

Contract:
- `launch` is idempotent per trial id: launching a trial that is already running does nothing.
- The executor owns a worker process from `launch` until `poll` has returned its exit code once;
  after that the Master owns the outcome (it reads the worker's reported status and log).
- `stop` asks the worker to checkpoint and exit (SIGTERM locally, scancel --signal on SLURM);
  `kill` ends it at once and is used only when `stop` timed out or the worker went silent.
- Exit codes from `poll`: 0-255 are the worker's own exit status, -N means it was killed by
  signal N, and codes from INFRASTRUCTURE_EXIT on are the backend's own (a job that a cluster
  cancelled, timed out or lost with its node). `describe_exit` turns any of them into words
  for the trial's error message.
- A backend with its own queue (SLURM) reports `waiting` while a launched trial has not
  started; the runner does not count that time as a silent (hung) worker.
"""

from __future__ import annotations

import abc
import signal
from dataclasses import dataclass, field
from pathlib import Path

from trainyard.errors import ExecutorError

INFRASTRUCTURE_EXIT = 256
"""The first exit code a backend may use for an end its infrastructure caused."""


class SlotsTaken(ExecutorError):
    """A launch found its slots taken by another experiment of a shared pool (a server's);
    the trial stays queued for a later tick."""


@dataclass(frozen=True)
class WorkerLaunch:
    """Everything an executor needs to start one trial's workers."""

    trial_id: int
    num_slots: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    """Master URL, token and trial id; the executor adds device placement."""
    command: tuple[str, ...] | None = None
    """A script trial's command (its experiment's `entrypoint`), run once per rank in place
    of trainyard's worker, with torchrun's variables set (executors/script.py)."""
    workdir: Path | None = None
    """The folder a script trial's command starts in."""


class Executor(abc.ABC):
    """Starts and watches trial workers on one kind of infrastructure."""

    name = "executor"
    """How messages name this backend."""
    runs_packs = False
    """Whether a launch may carry a pack of trials (several trial ids and credentials in the
    environment of one worker, docs/packing.md); such a backend gives each worker a
    `worker_key`. Local, SLURM and Kubernetes pools do; a backend without worker keys keeps
    one trial per worker (`pack: K` is refused, `auto` does not pack)."""

    @abc.abstractmethod
    def capacity(self) -> int:
        """Slots this executor can hand out at once (GPUs, or CPU thread groups)."""

    @abc.abstractmethod
    def free_slots(self) -> int:
        """Slots not held by a running trial."""

    @abc.abstractmethod
    def launch(self, launch: WorkerLaunch) -> None:
        """Start the trial's workers; a no-op when that trial is already running."""

    @abc.abstractmethod
    def poll(self, trial_id: int) -> int | None:
        """None while the trial's workers run; their exit code once, then forget the trial."""

    @abc.abstractmethod
    def stop(self, trial_id: int) -> None:
        """Ask the workers to checkpoint and exit."""

    @abc.abstractmethod
    def kill(self, trial_id: int) -> None:
        """End the workers now, without a checkpoint."""

    def worker_key(self, trial_id: int) -> int | None:
        """A running trial's worker as this backend names it (a local process id, a SLURM
        job id, a hash of a Kubernetes Job's uid), stored on the trial (`Trial.worker_key`)
        and shared by a pack's members: joins, adoption and `end_leftover` find a pack by it.
        None where the backend has no such name, which is why such a backend cannot run
        packs."""
        return None

    def end_leftover(self, trial_id: int, worker_key: int | None) -> None:
        """End the workers of `trial_id` that an earlier Master started and lost (it was
        killed), given the worker key it stored: they must not train beside the attempt that
        replaces them. A pack's worker is ended through any of its members. The default does
        nothing, for backends that find their leftovers themselves at launch."""
        return None

    def close(self) -> None:
        """Release what the executor holds besides workers (the local fork server); running
        workers are not touched."""
        return None

    def device_kind(self) -> str | None:
        """ "cuda" or "cpu" where the backend knows what its slots are, for `pack: auto`."""
        return None

    def waiting(self, trial_id: int) -> bool:
        """Whether a launched trial still waits in the backend's queue (not started)."""
        return False

    def describe_exit(self, trial_id: int, code: int) -> str:
        """Why a trial's workers ended without reporting an outcome, for its error message.

        Called after `poll` returned `code`; backends with codes of their own override it.
        """
        if code < 0:
            return f"worker was killed by signal {signal.Signals(-code).name} without reporting"
        return f"worker exited with code {code} without reporting an outcome"

    @abc.abstractmethod
    def running(self) -> list[int]:
        """Trial ids whose workers were launched and have not been reaped by `poll`."""
