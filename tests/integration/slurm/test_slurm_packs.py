"""A packed search on a real SLURM pool: several trials in one batch job's one worker, a
queued trial joining it, and a restarted Master ending the earlier Master's pack job by the
job id its members stored (docs/packing.md, "Packs on SLURM")."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.integration.helpers import cli_env, experiment, run_cli, wait_for
from tests.integration.packs import SLOW_MODEL, packed_trials

pytestmark = pytest.mark.integration


def _joined(home: Path) -> bool:
    """Trial 2 runs in the pack that trials 0 and 1 started in (the same job)."""
    trials = packed_trials(home)
    return (
        len(trials) == 3
        and trials[2].state == "RUNNING"
        and trials[2].worker_key is not None
        and trials[2].worker_key == trials[0].worker_key == trials[1].worker_key
    )


def test_a_packed_asha_search_runs_in_one_job_takes_a_join_and_outlives_its_master(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path, start_run
) -> None:
    """ASHA, `pack: 2`, room for two trials: trials 0 and 1 start in one job; when the
    searcher stops one, trial 2 joins that job's worker. The Master is then SIGKILLed; the
    resumed one cancels the pack's job by the job id on its running members (trial 2's
    included, which the job's name, after trial 0, would not lead to) and waits for it to
    end before relaunching; every trial ends with its own metrics and checkpoints."""
    (tmp_path / "slow_models.py").write_text(SLOW_MODEL)  # steps slow enough to join
    home = tmp_path / "home"
    env = cli_env(home, **slurm_cluster.env(), PYTHONPATH=str(tmp_path))
    config = experiment(
        toy_data,
        name="slurm-pack",
        model="slow_models:slow_mlp",
        hyperparameters={"lr": {"type": "log", "min": 1e-5, "max": 1.0}, "batch_size": 64},
        searcher={"name": "asha", "max_trials": 3, "asha": {"reduction_factor": 2}},
        resources={"pool": "cpu", "max_concurrent_trials": 2, "pack": 2},
        training={
            **experiment(toy_data)["training"],
            "max_length": {"batches": 30},
            "validation_period": {"batches": 10},
            "optimizer": {"name": "sgd", "momentum": 0.9},
        },
        checkpoint={"period": {"batches": 10}, "keep": 2},
    )
    file, facility = write_experiment(config), write_facility()
    cli = start_run(["run", str(file), "--facility", str(facility)], env)
    wait_for(lambda: _joined(home), timeout=90, what="trial 2 to join the pack's job")
    (first,) = slurm_cluster.jobs("trainyard-slurm-pack-")
    assert first["name"] == "trainyard-slurm-pack-1" and first["job_state"] == "RUNNING"
    assert packed_trials(home)[2].worker_key == first["job_id"]
    # The members' credentials are in the job's environment only: not in what any user of
    # the cluster can read about the job, nor in its script.
    shown = slurm_cluster.command("scontrol", "show", "job", "-dd", str(first["job_id"]))
    script = (Path(packed_trials(home)[0].log_path).parent / "slurm-job.sh").read_text()
    assert "tyw_" not in shown + script and "# Trials 1, 2, one pack in one worker" in script

    os.killpg(cli.pid, signal.SIGKILL)  # the Master dies; the pack's job runs on
    cli.wait()
    resumed = run_cli(["run", "--resume", "slurm-pack", "--facility", str(facility)], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The job is named after trial 1 (id), the pack's host; any running member finds it.
    assert re.search(rf"trial \d+: ending leftover SLURM job {first['job_id']}\n", resumed.stderr)

    jobs = {j["job_id"]: j for j in slurm_cluster.jobs("trainyard-slurm-pack-")}
    ended = jobs.pop(first["job_id"])
    assert ended["job_state"] == "CANCELLED" and jobs, (ended, jobs)
    # Cancelled and gone before a new job of its trials started: no trial trained twice.
    assert {j["job_state"] for j in jobs.values()} == {"COMPLETED"}
    assert min(j["start_time"] for j in jobs.values()) >= ended["end_time"]
    trials = packed_trials(home)
    summary = [(t.number, t.state, t.worker_key, t.validations) for t in trials]
    assert {t.state for t in trials} <= {"STOPPED", "COMPLETED"}, summary
    for trial in trials:  # each an ordinary trial: its own validations and checkpoints
        assert trial.validations and trial.validations[0] == 10, summary
        assert list((Path(trial.log_path).parent / "checkpoints").glob("step-*")), summary
    host_log = Path(trials[0].log_path).read_text()
    assert "trial 2 joins the pack (trial id 3)" in host_log  # the pack's log, in job 1
