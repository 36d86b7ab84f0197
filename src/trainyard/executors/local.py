"""Run trial workers as subprocesses of this machine, one slot = one GPU or a CPU thread group.

A one-slot trial's worker is a fork of the warm worker fork server (executors/fork_server.py,
worker/forkserver.py), which has imported torch and the worker once, so the trial skips seconds
of imports; without the server (off, or it failed) it is a fresh `python -m trainyard.worker`.
A trial with N slots runs under torchrun's elastic agent (`python -m torch.distributed.run`),
which starts N ranks of the same worker, forwards a stop signal to each, and ends them all when
one fails (no restarts: retrying a trial from its checkpoint is the runner's job). The executor
watches the agent only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
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
from trainyard.executors.fork_server import (
    WORKER_LOST_EXIT,
    ForkedWorker,
    ForkServer,
    is_running,
)
from trainyard.executors.script import script_path_variable, single_rank_env
from trainyard.protocol import PACK_TRIAL_IDS_ENV, ForkRequest

logger = logging.getLogger(__name__)

WORKER_MODULE = "trainyard.worker"
GPU_THREADS_PER_SLOT = 4
LEFTOVER_EXIT_TIMEOUT_S = 10.0


@dataclass
class _Running:
    process: subprocess.Popen[bytes] | ForkedWorker
    slots: list[int]
    log_file: IO[bytes] | None
    """The Popen'd worker's log, open in this process; a forked worker opens its own."""


class LocalExecutor(Executor):
    """Starts each trial's workers with their own devices and one log file per trial.

    Workers run in their own session so a Ctrl-C in the terminal reaches only the CLI, which
    then stops them in order (checkpoint first) instead of all processes dying at once.
    Each rank of a multi-slot trial gets one slot: one GPU, or one slot's CPU threads.
    """

    name = "local"
    runs_packs = True

    def __init__(
        self,
        *,
        gpu_ids: list[int],
        num_cpu_slots: int,
        threads_per_cpu_slot: int,
        fork_server: bool = False,
        warm_fork_server: ForkServer | None = None,
    ):
        """`warm_fork_server`: one already started (early, by `trainyard run`), taken as the
        fork server instead of a new one; closed here when `fork_server` is false."""
        if not gpu_ids and num_cpu_slots < 1:
            raise ExecutorError(
                "the local pool has no GPU and no CPU slot; set num_cpu_slots >= 1"
            )
        self._gpu_ids = gpu_ids
        self._num_slots = len(gpu_ids) if gpu_ids else num_cpu_slots
        self._threads_per_cpu_slot = max(1, threads_per_cpu_slot)
        self._free = list(range(self._num_slots))
        self._running: dict[int, _Running] = {}
        if warm_fork_server is not None and not fork_server:
            warm_fork_server.close()
        self._fork_server = (
            (warm_fork_server or ForkServer(env=cpu_thread_policy())) if fork_server else None
        )

    @classmethod
    def for_this_machine(
        cls,
        *,
        max_concurrent_trials: int,
        slots_per_trial: int,
        fork_workers: bool = True,
        warm_fork_server: ForkServer | None = None,
    ) -> LocalExecutor:
        """GPUs when CUDA sees any, else the usable CPU cores split among concurrent trials.

        A CPU slot gets at least one core, so there are never more slots than cores: extra
        concurrent trials wait in the queue instead of oversubscribing the machine. With
        `fork_workers`, one-slot workers of a CPU pool are forks of a warm fork server; on GPUs
        they stay fresh processes until forking them is checked on a GPU machine.
        """
        gpu_ids = _visible_gpus()
        num_cores = len(os.sched_getaffinity(0))
        num_cpu_slots = max(1, min(max_concurrent_trials * slots_per_trial, num_cores))
        threads = num_cores // num_cpu_slots
        return cls(
            gpu_ids=gpu_ids,
            num_cpu_slots=num_cpu_slots,
            threads_per_cpu_slot=threads,
            fork_server=fork_workers and not gpu_ids,
            warm_fork_server=warm_fork_server,
        )

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
        env = {**os.environ, **launch.env, **self._placement_env(slots)}
        if launch.command is not None:
            env["PATH"] = script_path_variable(env.get("PATH", ""))
            env["TRAINYARD_SCRIPT_TRIAL"] = str(launch.trial_id)
            if launch.num_slots == 1:
                env.update(single_rank_env(_free_port()))
        one_worker = launch.num_slots == 1 and launch.command is None
        running = self._fork(launch, env, slots) if one_worker else None
        if running is None:
            running = self._start_process(launch, env, slots)
        logger.info(
            "trial %d: worker pid %d on slots %s", launch.trial_id, running.process.pid, slots
        )
        self._running[launch.trial_id] = running

    def _fork(
        self, launch: WorkerLaunch, env: dict[str, str], slots: list[int]
    ) -> _Running | None:
        """The worker as a fork of the warm server; None without one (then it is stopped for
        good after a failure, and workers start as fresh processes), and for a pack: a later
        Master finds a leftover pack worker by any member's id in its /proc environment, which
        a fork does not show (its process name holds one id)."""
        if self._fork_server is None or PACK_TRIAL_IDS_ENV in launch.env:
            return None
        request = ForkRequest(trial_id=launch.trial_id, log_path=str(launch.log_path), env=env)
        try:
            worker = self._fork_server.start(request)
        except ExecutorError as err:
            logger.warning("%s; starting workers as fresh processes from now on", err)
            self._fork_server.close()
            self._fork_server = None
            return None
        return _Running(worker, slots, log_file=None)

    def _start_process(
        self, launch: WorkerLaunch, env: dict[str, str], slots: list[int]
    ) -> _Running:
        log_file = launch.log_path.open("ab")
        try:
            process = subprocess.Popen(
                _worker_command(launch),
                env=env,
                cwd=launch.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            log_file.close()
            self._free.extend(slots)
            what = shlex.join(launch.command) if launch.command else "the worker"
            message = f"could not start {what} of trial {launch.trial_id}: {err}"
            raise ExecutorError(message) from err
        return _Running(process, slots, log_file)

    def close(self) -> None:
        """Stop the fork server (workers it started carry on until they end)."""
        if self._fork_server is not None:
            self._fork_server.close()
            self._fork_server = None

    def describe_exit(self, trial_id: int, code: int) -> str:
        if code == WORKER_LOST_EXIT:
            return "the worker's exit status was lost: the worker fork server ended while it ran"
        return super().describe_exit(trial_id, code)

    def end_leftover(self, trial_id: int, worker_key: int | None) -> None:
        """SIGKILL the process group of an earlier Master's worker of this trial (its key is
        its pid), if that pid is still such a worker (its environment names the trial; pids
        are reused), and wait until it is gone."""
        pid = worker_key
        if pid is None or not _is_worker_of(pid, trial_id):
            return
        logger.warning("trial %d: ending leftover worker pid %d", trial_id, pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + LEFTOVER_EXIT_TIMEOUT_S
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def worker_key(self, trial_id: int) -> int | None:
        """The worker's process id (its process group's too: workers lead their session)."""
        running = self._running.get(trial_id)
        return running.process.pid if running else None

    def poll(self, trial_id: int) -> int | None:
        running = self._running.get(trial_id)
        if running is None:
            raise ExecutorError(f"trial {trial_id} is not running on this executor")
        code = running.process.poll()
        if code is None:
            return None
        if running.log_file is not None:
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
            return {
                "CUDA_VISIBLE_DEVICES": devices,
                "TRAINYARD_NUM_THREADS": str(GPU_THREADS_PER_SLOT),
                "OMP_NUM_THREADS": str(GPU_THREADS_PER_SLOT),
            }
        threads = str(self._threads_per_cpu_slot)
        return {
            "CUDA_VISIBLE_DEVICES": "",
            "TRAINYARD_NUM_THREADS": threads,
            "OMP_NUM_THREADS": threads,
            **cpu_thread_policy(),
        }


def cpu_thread_policy() -> dict[str, str]:
    """OpenMP threads that sleep while they wait, unless the environment chose otherwise.

    OpenMP's default spins at every barrier; when a CPU trial's threads share their cores with
    anything (the Master, the data loader's thread, another user's process), a spinning thread
    burns the time slice its descheduled partner needs, and small kernels such as ParticleNet's
    slow down several times over (a BatchNorm-conv block trained 5-9x slower with the spin on a
    loaded 2-core VM). libgomp reads this once when torch loads it, so the fork server needs it
    in its own environment.
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY") or "PASSIVE"}


def _worker_command(launch: WorkerLaunch) -> list[str]:
    """The worker (or a script trial's command) itself for one slot; torchrun's agent with
    one rank per slot for several (`--no-python` runs a script's command as it is)."""
    task = ["--no-python", *launch.command] if launch.command else ["--module", WORKER_MODULE]
    if launch.num_slots == 1:
        return list(launch.command) if launch.command else [sys.executable, "-m", WORKER_MODULE]
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
        *task,
    ]


def _is_worker_of(pid: int, trial_id: int) -> bool:
    """Whether `pid` is a live (not zombie) trainyard worker started for `trial_id`: its
    environment names the trial, or, for a fork of the fork server (whose /proc environ is
    the server's), its process name does."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = (proc / "environ").read_bytes().split(b"\0")
        cmdline = (proc / "cmdline").read_bytes()
        name = (proc / "comm").read_text().strip()
    except (OSError, IndexError):
        return False
    is_worker = (
        WORKER_MODULE.encode() in cmdline
        or b"torch.distributed.run" in cmdline
        or f"TRAINYARD_SCRIPT_TRIAL={trial_id}".encode() in environ
    )
    is_trials = _names_trial(environ, trial_id) or name == f"trial-{trial_id}"
    return state != "Z" and is_worker and is_trials


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
