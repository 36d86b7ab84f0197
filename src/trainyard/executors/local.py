"""Run trial workers as subprocesses of this machine, one slot = one GPU or a CPU thread group.

A one-slot trial is one `python -m trainyard.worker`. A trial with N slots runs under torchrun's
elastic agent (`python -m torch.distributed.run`), which starts N ranks of the same worker,
forwards a stop signal to each, and ends them all when one fails (no restarts: retrying a
trial from its checkpoint is the runner's job). The executor watches the agent only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from trainyard.errors import ExecutorError
from trainyard.executors.base import Executor, WorkerLaunch
from trainyard.protocol import PACK_TRIAL_IDS_ENV

logger = logging.getLogger(__name__)

WORKER_MODULE = "trainyard.worker"
GPU_THREADS_PER_SLOT = 4
LEFTOVER_EXIT_TIMEOUT_S = 10.0


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    slots: list[int]
    log_file: IO[bytes]


class LocalExecutor(Executor):
    """Starts each trial's workers with their own devices and one log file per trial.

    Workers run in their own session so a Ctrl-C in the terminal reaches only the CLI, which
    then stops them in order (checkpoint first) instead of all processes dying at once.
    Each rank of a multi-slot trial gets one slot: one GPU, or one slot's CPU threads.
    """

    name = "local"
    runs_packs = True

    def __init__(self, *, gpu_ids: list[int], num_cpu_slots: int, threads_per_cpu_slot: int):
        if not gpu_ids and num_cpu_slots < 1:
            raise ExecutorError(
                "the local pool has no GPU and no CPU slot; set num_cpu_slots >= 1"
            )
        self._gpu_ids = gpu_ids
        self._num_slots = len(gpu_ids) if gpu_ids else num_cpu_slots
        self._threads_per_cpu_slot = max(1, threads_per_cpu_slot)
        self._free = list(range(self._num_slots))
        self._running: dict[int, _Running] = {}

    @classmethod
    def for_this_machine(
        cls, *, max_concurrent_trials: int, slots_per_trial: int
    ) -> LocalExecutor:
        """GPUs when CUDA sees any, else the usable CPU cores split among concurrent trials.

        A CPU slot gets at least one core, so there are never more slots than cores: extra
        concurrent trials wait in the queue instead of oversubscribing the machine.
        """
        gpu_ids = _visible_gpus()
        num_cores = len(os.sched_getaffinity(0))
        num_cpu_slots = max(1, min(max_concurrent_trials * slots_per_trial, num_cores))
        threads = num_cores // num_cpu_slots
        return cls(gpu_ids=gpu_ids, num_cpu_slots=num_cpu_slots, threads_per_cpu_slot=threads)

    def capacity(self) -> int:
        return self._num_slots

    def free_slots(self) -> int:
        return len(self._free)

    def device_kind(self) -> str:
        return "cuda" if self._gpu_ids else "cpu"

    def launch(self, launch: WorkerLaunch) -> None:
        if launch.trial_id in self._running:
            return
        if launch.num_slots > len(self._free):
            raise ExecutorError(
                f"trial {launch.trial_id} needs {launch.num_slots} slot(s) but only "
                f"{len(self._free)} of {self._num_slots} are free; lower "
                "resources.slots_per_trial or max_concurrent_trials"
            )
        slots, self._free = self._free[: launch.num_slots], self._free[launch.num_slots :]
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = launch.log_path.open("ab")
        try:
            process = subprocess.Popen(
                _worker_command(launch),
                env={**os.environ, **launch.env, **self._placement_env(slots)},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            log_file.close()
            self._free.extend(slots)
            raise ExecutorError(
                f"could not start the worker of trial {launch.trial_id}: {err}"
            ) from err
        logger.info("trial %d: worker pid %d on slots %s", launch.trial_id, process.pid, slots)
        self._running[launch.trial_id] = _Running(process, slots, log_file)

    def end_leftover(self, trial_id: int, worker_pid: int | None) -> None:
        """SIGKILL the process group of an earlier Master's worker of this trial, if that pid
        is still such a worker (its environment names the trial; pids are reused), and wait
        until it is gone."""
        if worker_pid is None or not _is_worker_of(worker_pid, trial_id):
            return
        logger.warning("trial %d: ending leftover worker pid %d", trial_id, worker_pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker_pid, signal.SIGKILL)
        deadline = time.monotonic() + LEFTOVER_EXIT_TIMEOUT_S
        while _is_worker_of(worker_pid, trial_id) and time.monotonic() < deadline:
            time.sleep(0.05)

    def worker_pid(self, trial_id: int) -> int | None:
        running = self._running.get(trial_id)
        return running.process.pid if running else None

    def poll(self, trial_id: int) -> int | None:
        running = self._running.get(trial_id)
        if running is None:
            raise ExecutorError(f"trial {trial_id} is not running on this executor")
        code = running.process.poll()
        if code is None:
            return None
        running.log_file.close()
        self._free.extend(running.slots)
        self._free.sort()
        del self._running[trial_id]
        return code

    def stop(self, trial_id: int) -> None:
        self._signal(trial_id, signal.SIGTERM)

    def kill(self, trial_id: int) -> None:
        self._signal(trial_id, signal.SIGKILL)

    def running(self) -> list[int]:
        return list(self._running)

    def _signal(self, trial_id: int, signum: signal.Signals) -> None:
        running = self._running.get(trial_id)
        if running is None or running.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signum)

    def _placement_env(self, slots: list[int]) -> dict[str, str]:
        """Devices for the trial, threads per rank (torchrun would otherwise set 1)."""
        if self._gpu_ids:
            devices = ",".join(str(self._gpu_ids[s]) for s in slots)
            threads = str(GPU_THREADS_PER_SLOT)
        else:
            devices, threads = "", str(self._threads_per_cpu_slot)
        return {
            "CUDA_VISIBLE_DEVICES": devices,
            "TRAINYARD_NUM_THREADS": threads,
            "OMP_NUM_THREADS": threads,
        }


def _worker_command(launch: WorkerLaunch) -> list[str]:
    """The worker itself for one slot; torchrun's agent with one rank per slot for several."""
    if launch.num_slots == 1:
        return [sys.executable, "-m", WORKER_MODULE]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={launch.num_slots}",
        "--nnodes=1",
        "--max-restarts=0",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
        f"--rdzv-id=trial-{launch.trial_id}",
        "--module",
        WORKER_MODULE,
    ]


def _is_worker_of(pid: int, trial_id: int) -> bool:
    """Whether `pid` is a live (not zombie) trainyard worker started for `trial_id`."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = (proc / "environ").read_bytes().split(b"\0")
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    is_worker = WORKER_MODULE.encode() in cmdline or b"torch.distributed.run" in cmdline
    return state != "Z" and is_worker and _names_trial(environ, trial_id)


def _names_trial(environ: list[bytes], trial_id: int) -> bool:
    """Whether a worker's environment names the trial: as its own, or as a member of its pack."""
    if f"TRAINYARD_TRIAL_ID={trial_id}".encode() in environ:
        return True
    prefix = f"{PACK_TRIAL_IDS_ENV}=".encode()
    packed = next((v[len(prefix) :] for v in environ if v.startswith(prefix)), b"")
    return str(trial_id).encode() in packed.split(b",")


def _free_port() -> int:
    """A port the OS has just handed out and released, for the trial's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _visible_gpus() -> list[int]:
    """GPU indices this process may use, without initialising CUDA in the Master."""
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
