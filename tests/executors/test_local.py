"""The local executor with real worker processes (started without a Master, they exit fast)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch

from trainyard.errors import ExecutorError
from trainyard.executors import LocalExecutor, WorkerLaunch


def _wait_exit(executor: LocalExecutor, trial_id: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (code := executor.poll(trial_id)) is None:
        assert time.monotonic() < deadline, "worker did not exit"
        time.sleep(0.05)
    return code


@pytest.fixture
def executor() -> LocalExecutor:
    return LocalExecutor(gpu_ids=[], num_cpu_slots=2, threads_per_cpu_slot=1)


def test_worker_output_goes_to_its_log_and_slots_come_back(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    log = tmp_path / "t1" / "worker.log"
    executor.launch(WorkerLaunch(trial_id=1, num_slots=1, log_path=log, env={}))
    assert executor.free_slots() == 1
    assert executor.worker_pid(1) is not None
    assert _wait_exit(executor, 1) == 2
    assert "TRAINYARD_MASTER_URL, TRAINYARD_TOKEN, TRAINYARD_TRIAL_ID not set" in log.read_text()
    assert executor.free_slots() == 2
    assert executor.running() == []


def test_several_slots_run_one_rank_each_under_torchrun(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    log = tmp_path / "w.log"
    executor.launch(WorkerLaunch(trial_id=1, num_slots=2, log_path=log, env={}))
    assert executor.free_slots() == 0
    assert _wait_exit(executor, 1) == 1, "torchrun's agent exits 1 when a rank fails"
    text = log.read_text()
    # The first rank to fail logs why; the agent then ends the other and sums up.
    assert re.search(r"ERROR rank [01] trainyard.worker: TRAINYARD_MASTER_URL", text), text
    assert "trainyard.worker FAILED" in text
    assert executor.free_slots() == 2


def test_launch_is_idempotent(executor: LocalExecutor, tmp_path: Path) -> None:
    launch = WorkerLaunch(trial_id=7, num_slots=1, log_path=tmp_path / "w.log", env={})
    executor.launch(launch)
    pid = executor.worker_pid(7)
    executor.launch(launch)
    assert executor.worker_pid(7) == pid
    assert executor.free_slots() == 1
    _wait_exit(executor, 7)


def test_too_few_free_slots_is_refused_with_advice(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    with pytest.raises(ExecutorError, match=r"needs 3 slot\(s\) but only 2 of 2 are free; lower"):
        executor.launch(WorkerLaunch(trial_id=1, num_slots=3, log_path=tmp_path / "w.log", env={}))


def test_kill_ends_the_worker_with_sigkill(executor: LocalExecutor, tmp_path: Path) -> None:
    env = {
        "TRAINYARD_MASTER_URL": "http://127.0.0.1:9",
        "TRAINYARD_TOKEN": "x",
        "TRAINYARD_TRIAL_ID": "1",
    }
    executor.launch(WorkerLaunch(trial_id=1, num_slots=1, log_path=tmp_path / "w.log", env=env))
    executor.kill(1)
    assert _wait_exit(executor, 1) == -9


def test_polling_an_unknown_trial_is_an_error(executor: LocalExecutor) -> None:
    with pytest.raises(ExecutorError, match="trial 5 is not running on this executor"):
        executor.poll(5)


def test_a_pool_without_slots_is_refused() -> None:
    with pytest.raises(ExecutorError, match="no GPU and no CPU slot"):
        LocalExecutor(gpu_ids=[], num_cpu_slots=0, threads_per_cpu_slot=1)


def test_cpu_pool_never_has_more_slots_than_cores() -> None:
    num_cores = len(os.sched_getaffinity(0))
    executor = LocalExecutor.for_this_machine(
        max_concurrent_trials=num_cores * 4, slots_per_trial=1
    )
    assert executor.capacity() <= max(num_cores, torch.cuda.device_count())
