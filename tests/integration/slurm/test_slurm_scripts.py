"""A script trial on the real SLURM test cluster: two ranks on two nodes, each task running the
user's command with torchrun's variables derived from SLURM's, the chief reporting and
registering checkpoints through the Master as on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import cli_env, run_cli, stored_trials
from tests.integration.test_scripts import SCRIPT
from trainyard.store import repository

pytestmark = pytest.mark.integration


def test_a_two_rank_script_trial_runs_as_one_job_on_two_nodes(
    slurm_cluster, write_facility, tmp_path: Path
) -> None:
    (tmp_path / "train.py").write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    config = {
        "name": "slurm-script",
        "entrypoint": {
            "command": "python train.py",
            "workdir": str(tmp_path),
            "environment": {"SCRIPT_OUT": str(out)},
        },
        "searcher": {"name": "single", "metric": "score"},
        "resources": {"pool": "gpu", "slots_per_trial": 2},
    }
    file = tmp_path / "experiment.yaml"
    file.write_text(json.dumps(config))
    home = tmp_path / "home"
    env = cli_env(home, **slurm_cluster.env())
    result = run_cli(["run", str(file), "--facility", str(write_facility())], env)
    assert result.returncode == 0, result.stdout + result.stderr

    (job,) = slurm_cluster.jobs("trainyard-slurm-script-")
    assert job["job_state"] == "COMPLETED"
    assert job["node_count"] == 2 and job["tasks"] == 2, job["nodes"]

    def steps(session, trial) -> tuple[str, list[int], list[int]]:
        training = repository.list_metrics(session, trial_id=trial.id, kind="training")
        checkpoints = repository.list_checkpoints(session, trial_id=trial.id)
        return trial.state, [m.batches for m in training], [c.batches for c in checkpoints]

    ((state, trained, checkpointed),) = stored_trials(home, steps)
    assert state == "COMPLETED"
    assert trained == [1, 2, 3, 4, 5, 6]  # once each: only the chief reports
    assert checkpointed  # the chief registered its folders through the Master
    seen = [json.loads(next(out.glob(f"rank-*-{rank}.json")).read_text()) for rank in (0, 1)]
    for rank, variables in enumerate(seen):
        assert variables["RANK"] == str(rank) and variables["WORLD_SIZE"] == "2"
        assert variables["LOCAL_RANK"] == "0" and variables["LOCAL_WORLD_SIZE"] == "1"
        assert variables["MASTER_ADDR"] == seen[0]["MASTER_ADDR"]
        assert variables["MASTER_PORT"] == seen[0]["MASTER_PORT"]
        assert (variables["ctx_rank"], variables["ctx_size"]) == (rank, 2)
