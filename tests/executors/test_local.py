"""The local executor with real worker processes (started without a Master, they exit fast),
as fresh processes and as forks of the warm fork server."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from trainyard.config.facility import load_facility
from trainyard.errors import ExecutorError
from trainyard.executors import LocalExecutor, WorkerLaunch
from trainyard.executors.fork_server import WORKER_LOST_EXIT, ForkServer
from trainyard.executors.pools import start_fork_server_early

UNREACHABLE_MASTER = {
    "TRAINYARD_MASTER_URL": "http://127.0.0.1:9",
    "TRAINYARD_TOKEN": "x",
    "TRAINYARD_TRIAL_ID": "1",
}
"""A worker with this environment retries the Master for about 30 s before it gives up."""


def _wait_exit(executor: LocalExecutor, trial_id: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (code := executor.poll(trial_id)) is None:
        assert time.monotonic() < deadline, "worker did not exit"
        time.sleep(0.05)
    return code


@pytest.fixture(params=[False, True], ids=["fresh", "forked"])
def executor(request: pytest.FixtureRequest) -> Iterator[LocalExecutor]:
    executor = LocalExecutor(
        gpu_ids=[], num_cpu_slots=2, threads_per_cpu_slot=1, fork_server=request.param
    )
    yield executor
    executor.close()


@pytest.fixture
def forking() -> Iterator[LocalExecutor]:
    executor = LocalExecutor(gpu_ids=[], num_cpu_slots=2, threads_per_cpu_slot=1, fork_server=True)
    yield executor
    executor.close()


def _launch_lasting_worker(executor: LocalExecutor, tmp_path: Path) -> int:
    """Trial 1's worker, which keeps trying to reach a Master for about 30 s; its pid."""
    executor.launch(
        WorkerLaunch(trial_id=1, num_slots=1, log_path=tmp_path / "w.log", env=UNREACHABLE_MASTER)
    )
    pid = executor.worker_key(1)
    assert pid is not None
    return pid


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_worker_output_goes_to_its_log_and_slots_come_back(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    log = tmp_path / "t1" / "worker.log"
    executor.launch(WorkerLaunch(trial_id=1, num_slots=1, log_path=log, env={}))
    assert executor.free_slots() == 1
    assert executor.worker_key(1) is not None
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
    pid = executor.worker_key(7)
    executor.launch(launch)
    assert executor.worker_key(7) == pid
    assert executor.free_slots() == 1
    _wait_exit(executor, 7)


def test_too_few_free_slots_is_refused_with_advice(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    with pytest.raises(ExecutorError, match=r"needs 3 slot\(s\) but only 2 of 2 are free; lower"):
        executor.launch(WorkerLaunch(trial_id=1, num_slots=3, log_path=tmp_path / "w.log", env={}))


def test_kill_ends_the_worker_with_sigkill(executor: LocalExecutor, tmp_path: Path) -> None:
    _launch_lasting_worker(executor, tmp_path)
    executor.kill(1)
    assert _wait_exit(executor, 1) == -9


def test_a_forked_worker_is_named_for_its_trial_and_found_as_a_leftover(
    forking: LocalExecutor, tmp_path: Path
) -> None:
    pid = _launch_lasting_worker(forking, tmp_path)
    server = _parent(pid)
    assert b"trainyard.worker.forkserver" in Path(f"/proc/{server}/cmdline").read_bytes()
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "trial-1"
    assert os.getpgid(pid) == pid, "its own session, so its whole group can be signalled"

    # A later Master (a new executor) finds it by trial id and ends it; another id is spared.
    later = LocalExecutor(gpu_ids=[], num_cpu_slots=1, threads_per_cpu_slot=1)
    later.end_leftover(2, pid)
    assert _alive(pid)
    later.end_leftover(1, pid)
    assert not _alive(pid)
    assert _wait_exit(forking, 1) == -9


def test_workers_outlive_a_closed_fork_server(forking: LocalExecutor, tmp_path: Path) -> None:
    pid = _launch_lasting_worker(forking, tmp_path)
    server = _parent(pid)
    forking.close()
    assert not _alive(server)
    assert _alive(pid), "closing the server leaves running workers alone"
    os.killpg(pid, signal.SIGKILL)


def test_a_dead_fork_server_loses_exit_codes_and_workers_start_fresh(
    forking: LocalExecutor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = _launch_lasting_worker(forking, tmp_path)
    os.kill(_parent(pid), signal.SIGKILL)
    forking.kill(1)
    code = _wait_exit(forking, 1)
    assert code == WORKER_LOST_EXIT
    assert forking.describe_exit(1, code) == (
        "the worker's exit status was lost: the worker fork server ended while it ran"
    )

    with caplog.at_level(logging.WARNING, logger="trainyard.executors.local"):
        forking.launch(WorkerLaunch(trial_id=2, num_slots=1, log_path=tmp_path / "2.log", env={}))
    assert "the worker fork server failed: it exited with code -9" in caplog.text
    assert "starting workers as fresh processes from now on" in caplog.text
    pid = forking.worker_key(2)
    assert pid is not None and _parent(pid) == os.getpid()
    assert _wait_exit(forking, 2) == 2


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
    executor.close()
    assert executor.capacity() <= max(num_cores, torch.cuda.device_count())


def _openmp_environ(executor: LocalExecutor, trial_id: int) -> bytes:
    """The environment libgomp read its settings from: the worker's own, or for a forked
    worker the fork server's (its parent), where torch was imported."""
    pid = executor.worker_key(trial_id)
    assert pid is not None
    loader = _parent(pid) if _parent(pid) != os.getpid() else pid
    deadline = time.monotonic() + 60
    while b"trainyard.worker" not in Path(f"/proc/{loader}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.01)  # forked from this process but not yet the worker's program
    return Path(f"/proc/{loader}/environ").read_bytes()


def test_cpu_workers_wait_passively_in_openmp(executor: LocalExecutor, tmp_path: Path) -> None:
    _launch_lasting_worker(executor, tmp_path)
    assert b"OMP_WAIT_POLICY=PASSIVE" in _openmp_environ(executor, 1).split(b"\0")
    executor.kill(1)
    _wait_exit(executor, 1)


def test_an_openmp_wait_policy_of_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    executor = LocalExecutor(gpu_ids=[], num_cpu_slots=1, threads_per_cpu_slot=1)
    _launch_lasting_worker(executor, tmp_path)
    assert b"OMP_WAIT_POLICY=ACTIVE" in _openmp_environ(executor, 1).split(b"\0")
    executor.kill(1)
    _wait_exit(executor, 1)


def test_a_warm_fork_server_is_the_one_workers_are_forked_from(tmp_path: Path) -> None:
    warm = ForkServer(env={})
    forking = LocalExecutor(
        gpu_ids=[],
        num_cpu_slots=1,
        threads_per_cpu_slot=1,
        fork_server=True,
        warm_fork_server=warm,
    )
    try:
        pid = _launch_lasting_worker(forking, tmp_path)
        assert _parent(pid) == warm.pid
        forking.kill(1)
        assert _wait_exit(forking, 1) == -9
    finally:
        forking.close()
    assert not _alive(warm.pid)


def test_an_executor_without_forked_workers_closes_a_warm_fork_server() -> None:
    warm = ForkServer(env={})
    LocalExecutor(gpu_ids=[0], num_cpu_slots=0, threads_per_cpu_slot=1, warm_fork_server=warm)
    assert not _alive(warm.pid)


def test_the_fork_server_starts_early_only_for_a_new_experiment_on_a_local_pool(
    tmp_path: Path,
) -> None:
    experiment = tmp_path / "e.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "early",
                "model": "mlp",
                "data": {"train": "train/*.parquet", "val": "val/*.parquet"},
                "training": {"max_length": {"epochs": 1}},
                "resources": {"pool": "cluster"},
            }
        )
    )
    facility = tmp_path / "facility.yaml"
    slurm = {"executor": "slurm", "slurm": {"partition": "gpu", "gpus_per_node": 4}}
    facility.write_text(yaml.safe_dump({"pools": {"cluster": slurm}}))
    assert load_facility(facility).pool("cluster").slurm is not None
    assert start_fork_server_early(experiment, facility_file=facility) is None
    facility.write_text(yaml.safe_dump({"pools": {"cluster": {}}}))
    server = start_fork_server_early(experiment, facility_file=facility)
    assert server is not None
    server.close()
    assert not _alive(server.pid)
    # A file that does not load is left to the run's own checks, which name the problem.
    assert start_fork_server_early(tmp_path / "missing.yaml", facility_file=facility) is None


def test_a_script_trial_runs_its_command_in_its_folder_with_one_ranks_variables(
    forking: LocalExecutor, tmp_path: Path
) -> None:
    code = "import os; print(os.getcwd(), os.environ['RANK'], os.environ['WORLD_SIZE'])"
    log = tmp_path / "script.log"
    forking.launch(
        WorkerLaunch(
            trial_id=3,
            num_slots=1,
            log_path=log,
            env={"TRAINYARD_TRIAL_ID": "3"},
            command=("python", "-c", code),
            workdir=tmp_path,
        )
    )
    assert _wait_exit(forking, 3) == 0
    assert log.read_text().split() == [str(tmp_path), "0", "1"]


def test_a_script_that_cannot_start_is_named_and_frees_its_slot(
    forking: LocalExecutor, tmp_path: Path
) -> None:
    launch = WorkerLaunch(
        trial_id=4, num_slots=1, log_path=tmp_path / "s.log", command=("./gone.sh", "--fast")
    )
    with pytest.raises(ExecutorError) as caught:
        forking.launch(launch)
    assert "could not start ./gone.sh --fast of trial 4: " in str(caught.value)
    assert forking.free_slots() == 2
