"""One MLflow run per trial: its hyperparameters as params, every report as metrics at the
trial's batch count, and at its end the status and the best checkpoint as artifacts.

Credentials for a tracking server come from the Master's environment (MLflow reads
MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD); the
experiment file refuses them. A Master that restarts finds its trials' runs by their tags.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from trainyard.config.tracking import MlflowSpec
from trainyard.protocol import TrialState
from trainyard.tracking.events import (
    HyperparameterValue,
    MetricsLogged,
    TrackingEvent,
    TrialEnded,
    TrialStarted,
)

_RUN_STATUS = {
    TrialState.COMPLETED: "FINISHED",
    TrialState.STOPPED: "FINISHED",
    TrialState.ERRORED: "FAILED",
    TrialState.CANCELED: "KILLED",
}
_EXPERIMENT_TAG = "trainyard.experiment_id"
_TRIAL_TAG = "trainyard.trial_id"
_MAX_BATCH = 1000
"""MLflow's limit on metrics per log_batch call."""


def _quick_failure_defaults() -> None:
    """An unreachable server fails in seconds rather than after MLflow's default retries
    (about four minutes); the user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # MLflow 3 refuses its file store unless asked; a folder is what the user named.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _artifacts_beside(spec: MlflowSpec) -> str | None:
    """For a SQLite store, artifacts go to mlartifacts/ beside its file: MLflow's default is
    ./mlruns under whatever folder the Master happens to run in. A folder store keeps them
    inside itself, and a tracking server decides for itself (None)."""
    parts = urlsplit(spec.uri)
    if parts.scheme != "sqlite":
        return None
    database = Path(spec.uri.removeprefix("sqlite:///"))
    return (database.parent.resolve() / "mlartifacts").as_uri()


class MlflowSink:
    """The MLflow side of one trainyard experiment."""

    def __init__(self, spec: MlflowSpec, experiment_name: str) -> None:
        _quick_failure_defaults()
        from mlflow import MlflowClient

        self.description = f"MLflow at {spec.uri}"
        self._spec = spec
        self._client = MlflowClient(tracking_uri=spec.uri)
        name = spec.experiment or experiment_name
        found = self._client.get_experiment_by_name(name)
        self._mlflow_experiment = (
            found.experiment_id
            if found
            else self._client.create_experiment(name, artifact_location=_artifacts_beside(spec))
        )
        self._runs: dict[int, str] = {}

    def handle(self, event: TrackingEvent) -> None:
        run_id = self._run_id(event)
        if isinstance(event, TrialStarted):
            self._log_params(run_id, event.hyperparameters)
        elif isinstance(event, MetricsLogged):
            self._log_metrics(run_id, event)
        elif isinstance(event, TrialEnded):
            self._end(run_id, event)

    def close(self) -> None:
        """Nothing is buffered: every call reached MLflow when `handle` returned."""

    def _run_id(self, event: TrackingEvent) -> str:
        cached = self._runs.get(event.trial_id)
        if cached is not None:
            return cached
        found = self._client.search_runs(
            [self._mlflow_experiment],
            filter_string=(
                f"tags.`{_EXPERIMENT_TAG}` = '{event.experiment_id}' "
                f"and tags.`{_TRIAL_TAG}` = '{event.trial_id}'"
            ),
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run = self._client.create_run(
                self._mlflow_experiment,
                run_name=f"trial-{event.trial_id}",
                tags={
                    _EXPERIMENT_TAG: str(event.experiment_id),
                    _TRIAL_TAG: str(event.trial_id),
                    "trainyard.trial_number": str(event.trial_number),
                },
            )
            run_id = run.info.run_id
        self._runs[event.trial_id] = run_id
        return run_id

    def _log_params(self, run_id: str, hyperparameters: Mapping[str, HyperparameterValue]) -> None:
        from mlflow.entities import Param

        params = [Param(name, str(value)) for name, value in hyperparameters.items()]
        if params:
            self._client.log_batch(run_id, params=params)

    def _log_metrics(self, run_id: str, event: MetricsLogged) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now_ms, event.batches)
            for name, value in event.values.items()
        ]
        for start in range(0, len(metrics), _MAX_BATCH):
            self._client.log_batch(run_id, metrics=metrics[start : start + _MAX_BATCH])

    def _end(self, run_id: str, event: TrialEnded) -> None:
        checkpoint = event.checkpoint
        if self._spec.log_checkpoint and checkpoint is not None and checkpoint.is_dir():
            self._client.log_artifacts(run_id, str(checkpoint), "checkpoint")
        self._client.set_terminated(run_id, _RUN_STATUS.get(event.state, "FINISHED"))
