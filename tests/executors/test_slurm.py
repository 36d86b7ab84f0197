"""The SLURM executor's side of the conversation: the jobs it asks for, how it reads their
states, and its messages. SLURM's commands are stand-ins on PATH that record what they were
asked and answer like SLURM 22.05 does; tests/integration/slurm runs the real thing."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from trainyard.config.facility import SlurmPoolSpec
from trainyard.errors import ConfigError, ExecutorError
from trainyard.executors import WorkerLaunch
from trainyard.executors.base import INFRASTRUCTURE_EXIT
from trainyard.executors.slurm import EXIT_CODES, SlurmExecutor
from trainyard.executors.slurm_cli import _from_squeue
from trainyard.protocol import PACK_TOKENS_ENV, PACK_TRIAL_IDS_ENV

GPU_POOL = {"partition": "gpu", "gpus_per_node": 4, "cpus_per_gpu": 8, "mem_per_gpu": "60G"}
CPU_POOL = {"partition": "cpu", "tasks_per_node": 16, "cpus_per_task": 4, "mem_per_task": "8G"}


class FakeSlurm:
    """sbatch, squeue, scontrol, scancel and sinfo as scripts that log their arguments."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls = folder / "calls"
        self.jobs: list[dict[str, Any]] = []
        for name, answer in {
            "sbatch": 'cat "${@: -1}" > "$0.script" 2>/dev/null; env > "$0.env"; echo 4242',
            "squeue": 'cat "$0.json"',
            "scontrol": 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1',
            "scancel": "true",
            "sinfo": "true",
        }.items():
            script = folder / name
            script.write_text(f'#!/bin/bash\necho "{name} $*" >> {self.calls}\n{answer}\n')
            script.chmod(0o755)
        self.set_jobs([])

    def set_jobs(self, jobs: list[dict[str, Any]]) -> None:
        (self.folder / "squeue.json").write_text(json.dumps({"jobs": jobs}))

    def called(self, name: str) -> list[list[str]]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [shlex.split(line)[1:] for line in lines if line.split()[0] == name]

    def script(self) -> str:
        return (self.folder / "sbatch.script").read_text()

    def sbatch_env(self) -> str:
        """The environment sbatch ran with, which --export=ALL hands to the job."""
        return (self.folder / "sbatch.env").read_text()

    def set_scontrol_job(self, before: str, after: str) -> None:
        """`scontrol show job -o` prints job 4242 with `before` as its fields until scancel
        is called, then with `after`."""
        (self.folder / "scontrol.before").write_text(f"JobId=4242 {before}\n")
        (self.folder / "scontrol.after").write_text(f"JobId=4242 {after}\n")
        script = self.folder / "scontrol"
        script.write_text(
            f'#!/bin/bash\necho "scontrol $*" >> {self.calls}\n'
            f"if grep -q ^scancel {self.calls}; then cat $0.after; else cat $0.before; fi\n"
        )


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return FakeSlurm(folder)


def _executor(**spec: Any) -> SlurmExecutor:
    return SlurmExecutor(
        pool="a100",
        spec=SlurmPoolSpec.model_validate({"status_interval_s": 0.001, **spec}),
        experiment="exp",
        source="facility file f.yaml",
    )


def _launch(executor: SlurmExecutor, tmp_path: Path, num_slots: int = 1) -> None:
    log = tmp_path / "trial" / "worker.log"
    env = {"TRAINYARD_TRIAL_ID": "7"}
    executor.launch(WorkerLaunch(trial_id=7, num_slots=num_slots, log_path=log, env=env))


def _job(state: str, exit_code: int = 0, **fields: Any) -> dict[str, Any]:
    return {"job_id": 4242, "job_state": state, "exit_code": exit_code, "nodes": "n1", **fields}


@pytest.mark.parametrize(
    ("num_slots", "nodes", "tasks"), [(1, 1, 1), (3, 1, 3), (4, 1, 4), (8, 2, 4), (16, 4, 4)]
)
def test_trial_shape_fills_nodes_of_the_pool(num_slots: int, nodes: int, tasks: int) -> None:
    shape = _executor(**GPU_POOL, max_nodes=4).job_shape(num_slots)
    assert (shape.nodes, shape.tasks_per_node) == (nodes, tasks)


def test_trial_larger_than_the_pool_allows_names_pool_and_gpus_per_node() -> None:
    with pytest.raises(ConfigError) as caught:
        _executor(**GPU_POOL, max_nodes=8, max_nodes_per_trial=2).job_shape(12)
    assert (
        "`resources.slots_per_trial`: 12 slots per trial need 3 nodes of pool 'a100' "
        "(gpus_per_node 4 in facility file f.yaml) but it gives a trial at most 2 "
        "(max_nodes_per_trial); lower slots_per_trial to at most 8"
    ) in str(caught.value)
    with pytest.raises(ConfigError, match="6 slots per trial do not fill whole nodes"):
        _executor(**GPU_POOL, max_nodes=2).job_shape(6)


def test_gpu_job_asks_for_gpus_per_node_and_the_pools_options(
    slurm: FakeSlurm, tmp_path: Path
) -> None:
    executor = _executor(
        **GPU_POOL,
        account="hep",
        qos="normal",
        max_nodes=2,
        time_limit="1-00:00:00",
        sbatch_options=["--constraint=a100"],
    )
    _launch(executor, tmp_path, num_slots=8)
    (args,) = slurm.called("sbatch")
    assert args[:-1] == [
        "--parsable",
        "--partition=gpu",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--account=hep",
        "--qos=normal",
        "--gpus-per-node=4",
        "--cpus-per-gpu=8",
        "--mem-per-gpu=60G",
        "--time=1-00:00:00",
        "--signal=TERM@300",
        "--job-name=trainyard-exp-7",
        f"--output={tmp_path / 'trial' / 'worker.log'}",
        "--open-mode=append",
        "--no-requeue",
        "--export=ALL",
        "--constraint=a100",
    ]
    assert args[-1] == str(tmp_path / "trial" / "slurm-job.sh")
    assert executor.running() == [7] and executor.free_slots() == 0


def test_cpu_job_asks_for_cpus_and_memory_per_task(slurm: FakeSlurm, tmp_path: Path) -> None:
    _launch(_executor(**CPU_POOL), tmp_path, num_slots=2)
    (args,) = slurm.called("sbatch")
    assert "--ntasks-per-node=2" in args and "--cpus-per-task=4" in args
    assert "--mem-per-cpu=2048M" in args  # 8G per task of 4 cores
    assert not [a for a in args if "gpu" in a]


def test_one_slot_script_runs_setup_then_one_worker(slurm: FakeSlurm, tmp_path: Path) -> None:
    executor = _executor(
        **CPU_POOL,
        setup=["module load cuda", "source /venv/bin/activate"],
        container="apptainer exec /img.sif",
        python="python3",
    )
    _launch(executor, tmp_path)
    script = slurm.script()
    assert "module load cuda\nsource /venv/bin/activate\n" in script
    assert "export TRAINYARD_NUM_THREADS=4 OMP_NUM_THREADS=4" in script
    srun = "srun --kill-on-bad-exit=1 --cpus-per-task=4 apptainer exec /img.sif python3 -m"
    assert f"{srun} trainyard.worker" in script
    assert "MASTER_ADDR" not in script


def test_multi_slot_script_maps_slurms_ranks_to_torch_distributed(
    slurm: FakeSlurm, tmp_path: Path
) -> None:
    _launch(_executor(**GPU_POOL, max_nodes=2, srun_options=["--mpi=none"]), tmp_path, 8)
    script = slurm.script()
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))" in script
    assert (
        "srun --kill-on-bad-exit=1 --mpi=none bash -c 'export RANK=$SLURM_PROCID "
        "LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
        "LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; exec "
    ) in script
    assert "hostname\n" not in script and "$(hostname" not in script


def test_a_script_trial_runs_its_command_in_its_folder_with_torchruns_variables(
    slurm: FakeSlurm, tmp_path: Path
) -> None:
    executor = _executor(**CPU_POOL, python="/opt/venv/bin/python")
    log = tmp_path / "trial" / "worker.log"
    command = ("python", "train.py", "--note", "two words")
    launch = WorkerLaunch(trial_id=7, num_slots=1, log_path=log, command=command, workdir=tmp_path)
    executor.launch(launch)
    script = slurm.script()
    assert "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))" in script  # one task too
    inner = (
        "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
        f"LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; cd {tmp_path}; "
        "export PATH=/opt/venv/bin:$PATH; exec python train.py --note 'two words'"
    )
    assert f"srun --kill-on-bad-exit=1 --cpus-per-task=4 bash -c {shlex.quote(inner)}" in script
    assert "trainyard.worker" not in script


def test_leftover_job_of_the_same_trial_is_cancelled_first(
    slurm: FakeSlurm, tmp_path: Path
) -> None:
    log = str(tmp_path / "trial" / "worker.log")
    slurm.set_jobs(
        [
            _job("RUNNING", job_id=11, name="trainyard-exp-7", standard_output=log),
            _job("RUNNING", job_id=12, name="trainyard-exp-7", standard_output="/other.log"),
            _job("COMPLETED", job_id=13, name="trainyard-exp-7", standard_output=log),
        ]
    )
    _launch(_executor(**CPU_POOL), tmp_path)
    assert slurm.called("scancel") == [["11"]]


def test_a_pack_is_one_job_named_after_its_host_with_no_credential_in_script_or_args(
    slurm: FakeSlurm, tmp_path: Path
) -> None:
    executor = _executor(**GPU_POOL)
    env = {
        "TRAINYARD_TRIAL_ID": "7",
        "TRAINYARD_TOKEN": "tyw_host-secret",
        PACK_TRIAL_IDS_ENV: "7,8,9",
        PACK_TOKENS_ENV: "tyw_host-secret,tyw_eight-secret,tyw_nine-secret",
    }
    log = tmp_path / "trial" / "worker.log"
    executor.launch(WorkerLaunch(trial_id=7, num_slots=1, log_path=log, env=env))
    (args,) = slurm.called("sbatch")
    assert "--job-name=trainyard-exp-7" in args and "--gpus-per-node=1" in args
    assert "# Trials 7, 8, 9, one pack in one worker, of experiment exp" in slurm.script()
    assert executor.running() == [7] and executor.worker_key(7) == 4242
    secrets = ("tyw_host-secret", "tyw_eight-secret", "tyw_nine-secret")
    for secret in secrets:
        assert secret not in slurm.script() and secret not in " ".join(args)
    assert f"{PACK_TOKENS_ENV}={','.join(secrets)}" in slurm.sbatch_env()
    assert executor.device_kind() == "cuda" and _executor(**CPU_POOL).device_kind() == "cpu"


@pytest.mark.parametrize(
    ("fields", "scancel"),
    [
        ("JobName=trainyard-exp-9 JobState=RUNNING", [["4242"]]),
        ("JobName=trainyard-exp-9 JobState=PENDING", [["4242"]]),
        ("JobName=trainyard-exp-9 JobState=COMPLETED", []),
        ("JobName=trainyard-exp-b-9 JobState=RUNNING", []),  # experiment exp-b's job
    ],
)
def test_a_restarted_master_ends_the_stored_job_of_a_trial_even_when_not_its_host(
    slurm: FakeSlurm, fields: str, scancel: list[list[str]]
) -> None:
    """Trial 7 was a member of the pack of trial 9 (job trainyard-exp-9, stored as its
    worker key): its job is cancelled and waited for, unless it has ended or is not this
    experiment's."""
    slurm.set_scontrol_job(fields, "JobName=trainyard-exp-9 JobState=CANCELLED ExitCode=0:15")
    executor = _executor(**CPU_POOL)
    executor.end_leftover(7, worker_key=4242)
    assert slurm.called("scancel") == scancel
    executor.end_leftover(7, worker_key=None)
    assert slurm.called("scancel") == scancel


@pytest.mark.parametrize(
    ("state", "exit_code", "code", "words"),
    [
        ("COMPLETED", 0, 0, "worker exited with code 0"),
        ("FAILED", 3 << 8, 3, "worker exited with code 3"),
        ("FAILED", 9, -9, "killed by signal SIGKILL"),
        ("NODE_FAIL", 15, EXIT_CODES["NODE_FAIL"], "SLURM job 4242 on n1 lost a node"),
        ("TIMEOUT", 15, EXIT_CODES["TIMEOUT"], "reached its time limit (2:00:00, `time_limit`"),
        ("PREEMPTED", 15, EXIT_CODES["PREEMPTED"], "was preempted"),
        ("CANCELLED", 15, EXIT_CODES["CANCELLED"], "was cancelled"),
        ("OUT_OF_MEMORY", 0, EXIT_CODES["OUT_OF_MEMORY"], "raise mem_per_gpu or mem_per_task"),
    ],
)
def test_job_end_becomes_an_exit_code_and_words(
    slurm: FakeSlurm, tmp_path: Path, state: str, exit_code: int, code: int, words: str
) -> None:
    executor = _executor(**CPU_POOL, time_limit="2:00:00")
    _launch(executor, tmp_path)
    slurm.set_jobs([_job("RUNNING")])
    assert executor.poll(7) is None
    slurm.set_jobs([_job("COMPLETING")])
    assert executor.poll(7) is None
    slurm.set_jobs([_job(state, exit_code, state_reason="NodeDown")])
    assert executor.poll(7) == code
    assert words in executor.describe_exit(7, code)
    assert executor.running() == [] and executor.free_slots() == executor.capacity()


def test_purged_job_is_reported_as_unknown(slurm: FakeSlurm, tmp_path: Path) -> None:
    executor = _executor(**CPU_POOL)
    _launch(executor, tmp_path)
    code = executor.poll(7)
    assert code == EXIT_CODES["VANISHED"] and code >= INFRASTRUCTURE_EXIT
    assert "no longer known to slurmctld" in executor.describe_exit(7, code)


def test_stop_signals_the_workers_step_and_cancels_a_job_still_queued(
    slurm: FakeSlurm, tmp_path: Path
) -> None:
    executor = _executor(**CPU_POOL)
    _launch(executor, tmp_path)
    slurm.set_jobs([_job("PENDING")])
    assert executor.waiting(7)
    executor.stop(7)
    slurm.set_jobs([_job("RUNNING")])
    assert not executor.waiting(7)
    executor.stop(7)
    executor.kill(7)
    assert slurm.called("scancel") == [["4242"], ["--signal=TERM", "4242"], ["4242"]]


def test_later_slurm_json_layout_is_read_too() -> None:
    status = _from_squeue(
        {
            "job_id": 5,
            "job_state": ["FAILED"],
            "exit_code": {"return_code": {"set": True, "number": 3}, "signal": {"id": 0}},
        }
    )
    assert (status.state, status.return_code, status.signal) == ("FAILED", 3, 0)
    assert _from_squeue({"job_id": 5, "job_state": ["CANCELLED", "COMPLETING"]}).state == (
        "COMPLETING"
    )


def test_missing_slurm_commands_name_the_command_and_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExecutorError) as caught:
        _executor(**CPU_POOL).check(1)
    message = str(caught.value)
    assert "`sinfo` is not on PATH" in message
    assert "apt-get install slurm-client" in message and "slurm-wlm" in message
