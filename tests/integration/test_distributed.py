"""Trials on two ranks through `trainyard run`: torchrun's agent, gloo on CPU, real checkpoints."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.helpers import (
    checkpoint_steps,
    cli_env,
    experiment,
    last_validation,
    run_cli,
    start_cli,
    wait_for,
)
from trainyard.settings import Settings
from trainyard.store import TrialState, open_store, repository
from trainyard.worker.checkpoint import CheckpointManager

pytestmark = pytest.mark.integration

# 2 ranks x 32 jets add the same float32 numbers as 1 rank x 64, in another order: after 20
# AdamW steps the weights differ by at most 3e-8 (measured on CPU); 1e-6 leaves a wide margin
# and still fails at once if a rank trained on other jets or gradients were not averaged.
DDP_ATOL = 1e-6
# Validation over both ranks' shares must see the same 512 jets as one rank.
VAL_LOSS_ATOL = 1e-6
VAL_AUC_ATOL = 1e-4  # two near-tied scores swapping order moves the AUC by 1/(256*256)

MODELS = textwrap.dedent(
    """
    import os
    import signal

    import torch
    from torch import nn


    class Pooled(nn.Module):
        # No BatchNorm and no dropout: each rank sees half of the batch, and with these
        # two-rank DDP computes the same gradients as one rank.
        def __init__(self, num_features, num_classes):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(2 * num_features, 32), nn.ReLU(), nn.Linear(32, num_classes)
            )

        def forward(self, points, features, mask):
            count = mask.sum(dim=-1).clamp(min=1)
            mean = (features * mask).sum(dim=-1) / count
            peak = (features * mask).amax(dim=-1)
            return self.net(torch.cat([mean, peak], dim=1))


    def pooled(num_features, num_classes):
        return Pooled(num_features, num_classes)


    def rank1_dies(num_features, num_classes):
        model = Pooled(num_features, num_classes)
        original, calls = model.forward, [0]

        def forward(*args):
            calls[0] += 1
            if os.environ.get("RANK") == "1" and calls[0] == 8:
                print("rank 1 kills itself now", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args)

        model.forward = forward
        return model
    """
)


@pytest.fixture
def models_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "dist_models.py").write_text(MODELS)
    return cli_env(tmp_path / "home", PYTHONPATH=str(tmp_path))


def _config(toy_data: Path, name: str, *, slots: int, **sections: Any) -> dict[str, Any]:
    base = experiment(toy_data)
    training = {**base["training"], "max_length": {"batches": 20}, **sections.pop("training", {})}
    return experiment(
        toy_data,
        name=name,
        resources={"slots_per_trial": slots, **sections.pop("resources", {})},
        training=training,
        **sections,
    )


def _trial(home: Path) -> Any:
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            experiment_id = repository.list_experiments(session)[0].id
            trial = repository.list_trials(session, experiment_id=experiment_id)[0]
            session.expunge(trial)
            return trial
    finally:
        store.close()


def _newest(home: Path) -> Path:
    return max(home.glob("experiments/*/trials/*/checkpoints/step-*"))


def test_two_rank_ddp_matches_one_rank(toy_data, write_experiment, models_env, tmp_path) -> None:
    final: dict[int, dict[str, torch.Tensor]] = {}
    validation: dict[int, dict[str, float]] = {}
    for slots in (1, 2):
        home = tmp_path / f"home{slots}"
        config = _config(toy_data, f"ddp{slots}", slots=slots, model="dist_models:pooled")
        result = run_cli(
            ["run", str(write_experiment(config))], {**models_env, "TRAINYARD_HOME": str(home)}
        )
        assert result.returncode == 0, result.stdout + result.stderr
        newest = _newest(home)
        assert newest.name == "step-00000020"
        final[slots] = torch.load(newest / "state.pt", weights_only=True)["model"]
        validation[slots] = last_validation(home, _trial(home).id)
    assert final[1].keys() == final[2].keys()  # DDP's "module." prefix is not saved
    for name, one_rank in final[1].items():
        difference = (one_rank - final[2][name]).abs().max().item()
        print(f"{name}: max |1 rank - 2 ranks| = {difference:.2e}")
        assert torch.allclose(one_rank, final[2][name], rtol=0, atol=DDP_ATOL), name
    assert abs(validation[1]["val_loss"] - validation[2]["val_loss"]) < VAL_LOSS_ATOL
    assert abs(validation[1]["val_auc"] - validation[2]["val_auc"]) < VAL_AUC_ATOL
    log = next((tmp_path / "home2").glob("experiments/*/trials/*/*.log")).read_text()
    assert "batch 64 (2 rank(s), ddp)" in log


def test_fsdp_trial_checkpoints_sharded_and_resumes_on_one_rank(
    toy_data, write_experiment, models_env
) -> None:
    home = Path(models_env["TRAINYARD_HOME"])
    config = _config(
        toy_data,
        "fsdp",
        slots=2,
        resources={"strategy": "fsdp"},
        training={"max_length": {"batches": 200}},
        checkpoint={"period": {"batches": 10}, "keep": 2},
    )
    cli = start_cli(["run", str(write_experiment(config))], models_env)
    wait_for(lambda: bool(checkpoint_steps(home)), timeout=120, what="a sharded checkpoint")
    cli.send_signal(signal.SIGINT)
    output, _ = cli.communicate(timeout=120)
    assert cli.returncode == 130, output
    paused = _newest(home)
    meta = (paused / "meta.json").read_text()
    assert '"layout": "sharded"' in meta and '"world_size": 2' in meta
    assert {p.name for p in (paused / "shards").iterdir()} >= {"__0_0.distcp", "__1_0.distcp"}

    # The same trial continues on one rank (as after a retry on a smaller allocation).
    _set_slots_per_trial(home, 1)
    resumed = run_cli(["run", "--resume", "fsdp"], models_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _trial(home).state == TrialState.COMPLETED
    log = Path(_trial(home).log_path).read_text()
    assert (
        f"resumed from {paused} at batch {int(paused.name[5:])} (written by 2 rank(s), sharded)"
        in log
    )
    assert "checkpoint was written by 2 rank(s), this run has 1" in log
    final = _newest(home)
    assert final.name == "step-00000200"
    assert '"layout": "file"' in (final / "meta.json").read_text()


def _set_slots_per_trial(home: Path, slots: int) -> None:
    """Edit the stored experiment, as an operator shrinking a retried trial's allocation."""
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            stored = repository.list_experiments(session)[0]
            config = dict(stored.config)
            config["resources"] = {**config["resources"], "slots_per_trial": slots}
            stored.config = config
    finally:
        store.close()


def test_sigkilled_rank_fails_the_trial_and_the_retry_resumes(
    toy_data, write_experiment, models_env
) -> None:
    home = Path(models_env["TRAINYARD_HOME"])
    config = _config(
        toy_data,
        "kill",
        slots=2,
        model="dist_models:rank1_dies",
        checkpoint={"period": {"batches": 5}, "keep": 3},
        max_restarts=1,
    )
    started = time.monotonic()
    result = run_cli(["run", str(write_experiment(config))], models_env, timeout=150)
    elapsed = time.monotonic() - started
    # Each attempt dies at its 8th step; two attempts, both ended by torchrun, not by a timeout.
    assert result.returncode == 1, result.stdout
    assert elapsed < 60, f"two failing attempts took {elapsed:.0f} s"
    trial = _trial(home)
    assert trial.state == TrialState.ERRORED
    assert "Signal 9 (SIGKILL)" in trial.error and "local_rank: 1" in trial.error, trial.error
    log = Path(trial.log_path).read_text()
    assert log.count("rank 1 kills itself now") == 2
    # The retry resumed from the first attempt's checkpoint at step 5 ...
    assert "resumed from" in log and "step-00000005 at batch 5 (written by 2 rank(s)" in log
    # ... and the checkpoints both attempts left are intact.
    manager = CheckpointManager(Path(_newest(home)).parent, keep=3)
    loaded = manager.load_latest()
    assert loaded is not None and loaded.skipped == []
    assert checkpoint_steps(home) == [5, 10]
