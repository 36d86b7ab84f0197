"""What a killed Master leaves behind is recovered: nothing reported is lost, the store's
checkpoints are exactly those on disk, and a NaN loss never reaches a checkpoint."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch
from sqlalchemy import delete

from tests.integration.helpers import cli_env, experiment, run_cli
from trainyard.protocol import MetricKind, TrialState
from trainyard.settings import Settings
from trainyard.store import Checkpoint, CheckpointState, Metric, open_store, repository

pytestmark = pytest.mark.integration


def _open(home: Path):
    return open_store(Settings(home=home).resolved_database_url())


def _checkpoints_in_store(home: Path) -> dict[str, CheckpointState]:
    store = _open(home)
    try:
        with store.session() as session:
            return {c.path: c.state for c in session.query(Checkpoint)}
    finally:
        store.close()


def _checkpoints_on_disk(home: Path) -> set[str]:
    return {str(p) for p in home.glob("experiments/*/trials/*/checkpoints/step-*")}


def test_the_store_lists_exactly_the_checkpoints_on_disk(finished_run) -> None:
    home = finished_run.home
    stored = _checkpoints_in_store(home)
    active = {path for path, state in stored.items() if state is CheckpointState.ACTIVE}
    assert active == _checkpoints_on_disk(home)
    assert len(active) == 3  # checkpoint.keep
    assert len(stored) == 8  # every fifth of 40 batches, the older five marked deleted


def test_a_result_the_killed_master_never_stored_is_recovered_on_resume(
    toy_data, write_experiment, tmp_path
) -> None:
    """The state a Master killed at the trial's last step leaves: the worker validated and
    checkpointed at batch 40, but the validation, the progress and the outcome never reached
    the store, which still lists checkpoints the worker had already removed."""
    home = tmp_path / "home"
    result = run_cli(["run", str(write_experiment(experiment(toy_data)))], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr
    store = _open(home)
    with store.session() as session:
        (trial,) = repository.list_trials(session, experiment_id=1)
        session.execute(delete(Metric).where(Metric.batches == 40))
        for checkpoint in session.query(Checkpoint):
            checkpoint.state = CheckpointState.ACTIVE
        repository.update_trial(
            session, trial_id=trial.id, state=TrialState.RUNNING, batches_trained=0
        )
        repository.set_experiment_state(session, experiment_id=1, state="RUNNING")
    store.close()

    resumed = run_cli(["run", "--resume", "e2e"], cli_env(home))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "best val_auc at batch 40" in resumed.stdout
    store = _open(home)
    with store.session() as session:
        (trial,) = repository.list_trials(session, experiment_id=1)
        assert (trial.state, trial.batches_trained, trial.total_batches) == (
            TrialState.COMPLETED,
            40,
            40,
        )
        validations = repository.list_metrics(
            session, trial_id=trial.id, kind=MetricKind.VALIDATION
        )
        assert [m.batches for m in validations] == [20, 40]
    store.close()
    active = {p for p, s in _checkpoints_in_store(home).items() if s is CheckpointState.ACTIVE}
    assert active == _checkpoints_on_disk(home)
    shown = run_cli(["show", "e2e"], cli_env(home)).stdout
    assert "40/40" in shown


NAN_AT_BATCH_13 = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from trainyard.models import build_model


    def build(num_features, num_classes):
        model = build_model("mlp", num_features=num_features, num_classes=num_classes)
        original, calls = model.forward, {"n": 0}
        once = os.environ.get("NAN_ONCE_MARKER")

        def forward(*args):
            out = original(*args)
            if model.training:
                calls["n"] += 1
                if calls["n"] == 13 and not (once and Path(once).exists()):
                    if once:
                        Path(once).touch()
                    print("nan_model: a NaN loss at this batch", flush=True)
                    return out * float("nan")
            return out

        model.forward = forward
        return model
    """
)


def _nan_experiment(toy_data: Path, tmp_path: Path, **training: object) -> dict[str, object]:
    (tmp_path / "nan_model.py").write_text(NAN_AT_BATCH_13)
    base = experiment(toy_data)
    return {
        **base,
        "model": "nan_model:build",
        "max_restarts": 1,
        "training": {**base["training"], **training},
    }


def _all_weights_finite(home: Path) -> bool:
    for folder in home.glob("experiments/*/trials/*/checkpoints/step-*"):
        state = torch.load(folder / "state.pt", weights_only=True)
        if not all(bool(torch.isfinite(t).all()) for t in state["model"].values()):
            return False
    return True


def test_a_nan_loss_stops_the_attempt_and_the_retry_resumes_from_the_last_finite_checkpoint(
    toy_data, write_experiment, tmp_path
) -> None:
    home = tmp_path / "home"
    env = cli_env(home, PYTHONPATH=str(tmp_path), NAN_ONCE_MARKER=str(tmp_path / "nan-seen"))
    config = _nan_experiment(toy_data, tmp_path)
    result = run_cli(["run", str(write_experiment(config))], env)
    assert result.returncode == 0, result.stdout + result.stderr
    log = run_cli(["logs", "1"], cli_env(home)).stdout
    first_attempt = log.split("nan_model: a NaN loss at this batch")[1].split("resumed from")[0]
    assert "the loss became NaN or infinite at batch 13" in first_attempt
    assert "the last finite checkpoint is " in first_attempt
    assert "step-00000010, which a retry resumes from" in first_attempt
    assert "saved checkpoint" not in first_attempt  # nothing written after the NaN
    assert "step-00000010 at batch 10 " in log  # the retry resumed there
    store = _open(home)
    with store.session() as session:
        (trial,) = repository.list_trials(session, experiment_id=1)
        assert (trial.state, trial.num_restarts) == (TrialState.COMPLETED, 1)
        losses = [
            m.values["loss"]
            for m in repository.list_metrics(session, trial_id=trial.id)
            if "loss" in m.values
        ]
        assert losses and all(math.isfinite(v) for v in losses)
    store.close()
    assert _all_weights_finite(home)


def test_skip_batch_drops_the_nan_update_and_goes_on(toy_data, write_experiment, tmp_path) -> None:
    home = tmp_path / "home"
    config = _nan_experiment(toy_data, tmp_path, on_nonfinite="skip_batch")
    result = run_cli(
        ["run", str(write_experiment(config))], cli_env(home, PYTHONPATH=str(tmp_path))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = run_cli(["logs", "1"], cli_env(home)).stdout
    assert "loss is not finite at batch 13 on some rank: batch skipped" in log
    assert "resumed from" not in log
    assert _all_weights_finite(home)
