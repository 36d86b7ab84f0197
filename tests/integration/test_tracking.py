"""Tracking end to end: a real `trainyard run` sends its trials to a real MLflow store and writes
TensorBoard event files; both are read back and compared with trainyard's own store."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.integration.helpers import cli_env, experiment, run_cli
from trainyard.protocol import MetricKind
from trainyard.settings import Settings
from trainyard.store import open_store, repository

pytestmark = pytest.mark.integration


def _stored_reports(home: Path) -> dict[int, dict[int, dict[str, float]]]:
    """trial id -> batches -> values of its validation reports, from trainyard's store."""
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            experiment_id = repository.list_experiments(session)[0].id
            return {
                trial.id: {
                    m.batches: dict(m.values)
                    for m in repository.list_metrics(
                        session, trial_id=trial.id, kind=MetricKind.VALIDATION
                    )
                }
                for trial in repository.list_trials(session, experiment_id=experiment_id)
            }
    finally:
        store.close()


def _grid(toy_data: Path, tracking: dict[str, object]) -> dict[str, object]:
    return experiment(
        toy_data,
        name="tracked",
        hyperparameters={"lr": {"type": "categorical", "vals": [0.003, 0.01]}, "batch_size": 64},
        searcher={"name": "grid"},
        tracking=tracking,
    )


def test_trials_reach_mlflow_and_tensorboard_as_the_store_has_them(
    toy_data: Path, write_experiment, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    file = write_experiment(_grid(toy_data, {"mlflow": "mlruns", "tensorboard": "tb"}))
    result = run_cli(["run", str(file)], cli_env(home), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = _stored_reports(home)
    assert sorted(stored) == [1, 2] and all(len(reports) == 2 for reports in stored.values())

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=str(tmp_path / "mlruns"))
    mlflow_experiment = client.get_experiment_by_name("tracked")
    assert mlflow_experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([mlflow_experiment.experiment_id])}
    assert sorted(runs) == ["trial-1", "trial-2"]
    for trial_id, reports in stored.items():
        run = runs[f"trial-{trial_id}"]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["lr"]) in (0.003, 0.01)
        history = client.get_metric_history(run.info.run_id, "val_auc")
        assert {(m.step, m.value) for m in history} == {
            (batches, values["val_auc"]) for batches, values in reports.items()
        }
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
        assert "checkpoint/state.pt" in artifacts

    for trial_id, reports in stored.items():
        events = EventAccumulator(str(tmp_path / "tb" / "tracked-1" / f"trial-{trial_id}"))
        events.Reload()
        scalars = events.Scalars("validation/val_auc")
        assert [(s.step, pytest.approx(s.value)) for s in scalars] == [
            (batches, values["val_auc"]) for batches, values in sorted(reports.items())
        ]
        assert events.Scalars("training/loss")


def test_an_unreachable_mlflow_server_is_named_and_training_goes_on(
    toy_data: Path, write_experiment, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    home = tmp_path / "home"
    tracking = {"mlflow": url, "tensorboard": str(tmp_path / "tb")}
    file = write_experiment(experiment(toy_data, name="unreachable", tracking=tracking))
    result = run_cli(["run", str(file)], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"MLflow at {url} cannot be reached" in result.stderr
    assert "training goes on and every metric stays in trainyard's store" in result.stderr
    events = EventAccumulator(str(tmp_path / "tb" / "unreachable-1" / "trial-1"))
    events.Reload()
    assert [s.step for s in events.Scalars("validation/val_auc")] == [20, 40]
