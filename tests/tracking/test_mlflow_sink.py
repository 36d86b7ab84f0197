"""The MLflow tracker against real MLflow stores (SQLite, MLflow's recommended local backend):
one run per trial, found again by its tags after a Master restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from trainyard.config.tracking import MlflowSpec
from trainyard.protocol import MetricKind, TrialState
from trainyard.tracking import MetricsLogged, TrialEnded, TrialStarted
from trainyard.tracking.mlflow_sink import MlflowSink


def _validation(batches: int, auc: float) -> MetricsLogged:
    return MetricsLogged(
        experiment_id=4,
        trial_id=9,
        trial_number=2,
        kind=MetricKind.VALIDATION,
        batches=batches,
        values={"val_auc": auc, "val_loss": 1 - auc},
    )


def test_a_restarted_master_logs_into_the_same_run_and_uploads_the_best_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master_folder = tmp_path / "master"
    master_folder.mkdir()
    monkeypatch.chdir(master_folder)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    spec = MlflowSpec(uri=uri, experiment="tagger-search")
    first = MlflowSink(spec, "ignored-because-named")
    first.handle(TrialStarted(4, 9, 2, {"lr": 0.01, "optimizer": "adamw"}))
    first.handle(_validation(100, 0.81))
    checkpoint = tmp_path / "step-200"
    checkpoint.mkdir()
    (checkpoint / "state.pt").write_bytes(b"weights")
    restarted = MlflowSink(spec, "ignored-because-named")
    restarted.handle(_validation(200, 0.86))
    restarted.handle(
        TrialEnded(
            experiment_id=4,
            trial_id=9,
            trial_number=2,
            state=TrialState.ERRORED,
            hyperparameters={"lr": 0.01},
            best_metrics={"val_auc": 0.86},
            checkpoint=checkpoint,
        )
    )

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tagger-search")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "trial-9"
    assert run.info.status == "FAILED"
    assert run.data.params == {"lr": "0.01", "optimizer": "adamw"}
    assert run.data.tags["trainyard.trial_number"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [(m.step, m.value) for m in history] == [(100, 0.81), (200, 0.86)]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
        "checkpoint/state.pt"
    ]
    # Beside the database, not in whatever folder the Master ran in.
    assert list((tmp_path / "store" / "mlartifacts").rglob("state.pt"))
    assert not any(master_folder.iterdir())
