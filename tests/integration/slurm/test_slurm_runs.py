"""Experiments on a real SLURM cluster: trials as batch jobs, on several nodes, through
failures and kills, with the same results as on this machine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.helpers import (
    checkpoint_steps,
    cli_env,
    experiment,
    run_cli,
    wait_for,
)
from tests.integration.slurm.conftest import SLURM_POOLS, SlurmCluster
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import TrialState, open_store

pytestmark = pytest.mark.integration

MLP = {"name": "mlp"}


def _training(**overrides: Any) -> dict[str, Any]:
    base = {
        "max_length": {"batches": 40},
        "validation_period": {"batches": 20},
        "log_period_batches": 5,
        "seed": 3,
    }
    return {**base, **overrides}


@contextlib.contextmanager
def _service(home: Path) -> Iterator[MasterService]:
    settings = Settings(home=home)
    store = open_store(settings.resolved_database_url())
    try:
        yield MasterService(store, settings)
    finally:
        store.close()


def _submit_to_first_step_s(home: Path) -> float:
    """From the runner's launch (sbatch returned) to the first training step's report."""
    with _service(home) as service:
        trial = service.list_trials(1)[0]
        first = service.trial_metrics(trial.id, kind="training")[0]
        assert first.batches == 1, "the experiment must log every batch"
        assert trial.started_at is not None
        return (first.reported_at - trial.started_at).total_seconds()


def _final_weights(home: Path) -> dict[str, torch.Tensor]:
    newest = max(home.glob("experiments/*/trials/*/checkpoints/step-*"))
    return torch.load(newest / "state.pt", weights_only=True)["model"]


def _env(home: Path, cluster: SlurmCluster) -> dict[str, str]:
    return cli_env(home, **cluster.env())


def test_one_slot_trial_runs_as_a_job_with_checkpoints_and_logs(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path
) -> None:
    facility = write_facility()
    config = experiment(
        toy_data,
        name="slurm-one",
        resources={"pool": "cpu"},
        training=_training(log_period_batches=1),
    )
    file = write_experiment(config)
    home = tmp_path / "home"
    result = run_cli(["run", str(file), "--facility", str(facility)], _env(home, slurm_cluster))
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = slurm_cluster.jobs("trainyard-slurm-one-")
    assert job["job_state"] == "COMPLETED" and job["partition"] == "cpu"
    assert checkpoint_steps(home)[-1] == 40
    log = run_cli(["logs", "1"], _env(home, slurm_cluster)).stdout
    assert f"trainyard: SLURM job {job['job_id']} on {job['nodes']}" in log
    assert "validation at batch 40" in log

    # The same trial's start on this machine, for the time SLURM adds before the first step.
    local_home = tmp_path / "local"
    short = _training(log_period_batches=1, max_length={"batches": 2})
    local = write_experiment({**config, "resources": {"pool": "default"}, "training": short})
    assert run_cli(["run", str(local)], cli_env(local_home)).returncode == 0
    slurm_s, local_s = _submit_to_first_step_s(home), _submit_to_first_step_s(local_home)
    print(f"\nsubmit to first step: SLURM {slurm_s:.2f} s, local {local_s:.2f} s")


def test_search_runs_trials_at_once_on_several_nodes(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path
) -> None:
    config = experiment(
        toy_data,
        name="slurm-search",
        model=MLP,
        hyperparameters={"lr": {"type": "log", "min": 1.0e-3, "max": 1.0e-2}, "batch_size": 64},
        searcher={"name": "random", "max_trials": 4, "seed": 1},
        resources={"pool": "cpu", "max_concurrent_trials": 4},
        training=_training(max_length={"batches": 200}, validation_period={"batches": 100}),
    )
    file = write_experiment(config)
    home = tmp_path / "home"
    run = run_cli(
        ["run", str(file), "--facility", str(write_facility())], _env(home, slurm_cluster)
    )
    assert run.returncode == 0, run.stdout + run.stderr
    jobs = slurm_cluster.jobs("trainyard-slurm-search-")
    assert len(jobs) == 4 and {j["job_state"] for j in jobs} == {"COMPLETED"}
    assert len({j["nodes"] for j in jobs}) >= 2, [j["nodes"] for j in jobs]
    # All four ran at once: each started before any of them ended.
    assert max(j["start_time"] for j in jobs) < min(j["end_time"] for j in jobs)
    with _service(home) as service:
        assert {t.state for t in service.list_trials(1)} == {TrialState.COMPLETED}


def test_trial_on_a_failed_node_continues_from_its_checkpoint_elsewhere(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path, start_run
) -> None:
    config = experiment(
        toy_data,
        name="slurm-node",
        model=MLP,
        resources={"pool": "cpu"},
        training=_training(
            max_length={"batches": 3000},
            validation_period={"batches": 1000},
            log_period_batches=100,
        ),
        checkpoint={"period": {"batches": 100}, "keep": 2},
    )
    home = tmp_path / "home"
    env = _env(home, slurm_cluster)
    cli = start_run(
        ["run", str(write_experiment(config)), "--facility", str(write_facility())], env
    )
    wait_for(lambda: bool(checkpoint_steps(home)), timeout=60, what="a first checkpoint")
    (first_job,) = slurm_cluster.jobs("trainyard-slurm-node-")
    node = first_job["nodes"]
    slurm_cluster.command("scontrol", "update", f"nodename={node}", "state=down", "reason=test")
    try:
        output, _ = cli.communicate(timeout=120)
    finally:
        slurm_cluster.command("scontrol", "update", f"nodename={node}", "state=resume")
        wait_for(
            lambda: (
                slurm_cluster.command("sinfo", "-h", "-n", node, "-o", "%t").split()[0] == "idle"
            ),
            timeout=30,
            what=f"{node} back in service",
        )
    assert cli.returncode == 0, output
    jobs = {j["job_id"]: j for j in slurm_cluster.jobs("trainyard-slurm-node-")}
    assert jobs[first_job["job_id"]]["job_state"] == "NODE_FAIL"
    (second,) = [j for i, j in jobs.items() if i != first_job["job_id"]]
    assert second["job_state"] == "COMPLETED" and second["nodes"] != node
    log = run_cli(["logs", "1"], env).stdout
    assert f"SLURM job {second['job_id']} on {second['nodes']}" in log
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert resumed and "at batch 0 " not in resumed[0], log
    assert checkpoint_steps(home)[-1] == 3000


def test_killed_experiment_leaves_no_job_in_the_queue(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path, start_run
) -> None:
    config = experiment(
        toy_data,
        name="slurm-kill",
        model=MLP,
        searcher={"name": "random", "max_trials": 2},
        hyperparameters={"lr": {"type": "log", "min": 1.0e-3, "max": 1.0e-2}},
        resources={"pool": "cpu", "max_concurrent_trials": 2},
        training=_training(max_length={"batches": 100000}, validation_period={"batches": 5000}),
    )
    home = tmp_path / "home"
    env = _env(home, slurm_cluster)
    cli = start_run(
        ["run", str(write_experiment(config)), "--facility", str(write_facility())], env
    )
    wait_for(
        lambda: (
            [j["job_state"] for j in slurm_cluster.jobs("trainyard-slurm-kill-")]
            == ["RUNNING", "RUNNING"]
        ),
        timeout=60,
        what="two running jobs",
    )
    killed = run_cli(["kill", "slurm-kill"], env)
    assert killed.returncode == 0, killed.stderr
    output, _ = cli.communicate(timeout=90)
    assert "experiment 1 CANCELED" in output
    ours = {str(j["job_id"]) for j in slurm_cluster.jobs("trainyard-slurm-kill-")}
    assert not ours & set(slurm_cluster.active_job_ids())
    with _service(home) as service:
        assert {t.state for t in service.list_trials(1)} == {TrialState.CANCELED}


def test_two_node_ddp_trial_matches_a_local_two_rank_run(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path
) -> None:
    config = experiment(
        toy_data,
        name="slurm-ddp",
        model=MLP,
        resources={"pool": "gpu", "slots_per_trial": 2},
        training=_training(),
    )
    home = tmp_path / "home"
    run = run_cli(
        ["run", str(write_experiment(config)), "--facility", str(write_facility())],
        _env(home, slurm_cluster),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (job,) = slurm_cluster.jobs("trainyard-slurm-ddp-")
    assert job["node_count"] == 2 and job["tasks"] == 2, job["nodes"]

    local_home = tmp_path / "local"
    local = write_experiment({**config, "resources": {"pool": "default", "slots_per_trial": 2}})
    assert run_cli(["run", str(local)], cli_env(local_home)).returncode == 0
    expected, actual = _final_weights(local_home), _final_weights(home)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_trial_waiting_in_the_queue_is_not_taken_for_a_hung_worker(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path, start_run
) -> None:
    pool = SLURM_POOLS["cpu"]
    held = {**pool, "slurm": {**pool["slurm"], "sbatch_options": ["--hold"]}}
    config = experiment(toy_data, name="slurm-queued", model=MLP, resources={"pool": "held"})
    home = tmp_path / "home"
    env = cli_env(home, **slurm_cluster.env(), TRAINYARD_HEARTBEAT_TIMEOUT_S="6")
    facility = write_facility(held=held)
    cli = start_run(["run", str(write_experiment(config)), "--facility", str(facility)], env)
    wait_for(lambda: bool(slurm_cluster.jobs("trainyard-slurm-queued-")), timeout=60, what="a job")
    time.sleep(8)  # longer in the queue than the heartbeat timeout
    jobs = slurm_cluster.jobs("trainyard-slurm-queued-")
    assert [j["job_state"] for j in jobs] == ["PENDING"], [
        (j["job_id"], j["job_state"], j["state_reason"], j["submit_time"]) for j in jobs
    ]
    (job,) = jobs
    slurm_cluster.command("scontrol", "release", str(job["job_id"]))
    output, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0, output
    with _service(home) as service:
        (trial,) = service.list_trials(1)
        assert trial.state == TrialState.COMPLETED and trial.num_restarts == 0
