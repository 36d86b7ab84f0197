"""The Master's service layer: experiment lifecycle and the answers to workers.

The HTTP handlers and the experiment runner both call this; it is the only code that turns
requests into store writes, so the store stays consistent whoever calls.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from trainyard.config import ExperimentConfig, parse_experiment
from trainyard.master.api.schemas import (
    CheckpointReport,
    DecisionOut,
    ExperimentOut,
    Heartbeat,
    MetricOut,
    MetricsReport,
    TrialOut,
    TrialOutcome,
    TrialSpec,
)
from trainyard.search import Searcher, make_searcher
from trainyard.settings import Settings
from trainyard.store import (
    ExperimentState,
    Metric,
    Store,
    Trial,
    TrialState,
    repository,
)

logger = logging.getLogger(__name__)

_OUTCOME_STATES = {
    "completed": TrialState.COMPLETED,
    "stopped": TrialState.STOPPED,
    "errored": TrialState.ERRORED,
}


class MasterService:
    """Experiment and trial operations over one store; safe to call from several threads."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._searchers: dict[int, Searcher] = {}
        self._lock = threading.Lock()

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, config: ExperimentConfig) -> int:
        """Record a validated experiment and give it a folder; trials are created by the runner."""
        searcher = make_searcher(config)
        with self._store.session() as session:
            experiment = repository.create_experiment(
                session, name=config.name, config=config.model_dump(mode="json"), home_dir=""
            )
            home = (
                self._settings.resolved_home()
                / "experiments"
                / f"{experiment.id:05d}-{config.name}"
            )
            experiment.home_dir = str(home)
            experiment_id = experiment.id
        home.mkdir(parents=True, exist_ok=True)
        self._searchers[experiment_id] = searcher
        return experiment_id

    def experiment_config(self, experiment_id: int) -> ExperimentConfig:
        """The experiment's config, re-validated (catches a store written by another version)."""
        with self._store.session() as session:
            experiment = repository.get_experiment(session, experiment_id)
            return parse_experiment(experiment.config, source=f"experiment {experiment_id}")

    def searcher(self, experiment_id: int) -> Searcher:
        """The experiment's searcher, rebuilt from the stored config after a Master restart."""
        with self._lock:
            if experiment_id not in self._searchers:
                self._searchers[experiment_id] = make_searcher(
                    self.experiment_config(experiment_id)
                )
            return self._searchers[experiment_id]

    def set_experiment_state(
        self, experiment_id: int, state: ExperimentState, message: str | None = None
    ) -> None:
        with self._store.session() as session:
            repository.set_experiment_state(
                session, experiment_id=experiment_id, state=state, message=message
            )

    def create_trials(self, experiment_id: int, *, num_free: int) -> list[int]:
        """Ask the searcher for new trials while slots are free; returns the new trial ids."""
        with self._store.session() as session:
            num_created = len(repository.list_trials(session, experiment_id=experiment_id))
        proposals = self.searcher(experiment_id).next_trials(
            num_created=num_created, num_free=num_free
        )
        created = []
        with self._store.session() as session:
            for hyperparameters in proposals:
                trial = repository.create_trial(
                    session, experiment_id=experiment_id, hyperparameters=hyperparameters
                )
                trial.log_path = str(self._trial_dir(session, trial) / "worker.log")
                created.append(trial.id)
        return created

    def get_experiment(self, ref: int | str) -> ExperimentOut:
        with self._store.session() as session:
            experiment = repository.get_experiment(session, ref)
            num_trials = len(repository.list_trials(session, experiment_id=experiment.id))
            return ExperimentOut(
                id=experiment.id,
                name=experiment.name,
                state=experiment.state.value,
                created_at=experiment.created_at,
                ended_at=experiment.ended_at,
                message=experiment.message,
                num_trials=num_trials,
            )

    def list_experiments(self, *, limit: int = 100) -> list[ExperimentOut]:
        with self._store.session() as session:
            ids = [e.id for e in repository.list_experiments(session, limit=limit)]
        return [self.get_experiment(i) for i in ids]

    def list_trials(self, experiment_id: int) -> list[TrialOut]:
        with self._store.session() as session:
            return [
                _trial_out(t) for t in repository.list_trials(session, experiment_id=experiment_id)
            ]

    # -- trials ------------------------------------------------------------------------------

    def get_trial(self, trial_id: int) -> TrialOut:
        with self._store.session() as session:
            return _trial_out(repository.get_trial(session, trial_id))

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        with self._store.session() as session:
            repository.update_trial(session, trial_id=trial_id, **fields)

    def trial_metrics(self, trial_id: int, kind: str | None = None) -> list[MetricOut]:
        with self._store.session() as session:
            return [
                _metric_out(m)
                for m in repository.list_metrics(session, trial_id=trial_id, kind=kind)
            ]

    def latest_metrics(self, trial_id: int) -> tuple[MetricOut | None, MetricOut | None]:
        """The newest training and validation reports of a trial (for live tables)."""
        with self._store.session() as session:
            found = [
                repository.latest_metrics(session, trial_id=trial_id, kind=kind)
                for kind in ("training", "validation")
            ]
            training, validation = (_metric_out(m) if m else None for m in found)
        return training, validation

    def best_validation(self, trial_id: int, *, metric: str, mode: str) -> MetricOut | None:
        """The validation report with the best value of `metric` (max or min)."""
        reports = [m for m in self.trial_metrics(trial_id, "validation") if metric in m.values]
        if not reports:
            return None
        sign = 1.0 if mode == "max" else -1.0
        return max(reports, key=lambda m: sign * m.values[metric])

    def latest_checkpoint_path(self, trial_id: int) -> str | None:
        with self._store.session() as session:
            checkpoints = repository.list_checkpoints(session, trial_id=trial_id)
            return checkpoints[0].path if checkpoints else None

    def trial_spec(self, trial_id: int) -> TrialSpec:
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            experiment = repository.get_experiment(session, trial.experiment_id)
            return TrialSpec(
                trial_id=trial.id,
                experiment_id=experiment.id,
                trial_number=trial.number,
                config=experiment.config,
                hyperparameters=trial.hyperparameters,
                checkpoint_dir=str(self._trial_dir(session, trial) / "checkpoints"),
                heartbeat_interval_s=self._settings.heartbeat_interval_s,
            )

    def report_metrics(self, trial_id: int, report: MetricsReport) -> None:
        with self._store.session() as session:
            repository.add_metrics(
                session,
                trial_id=trial_id,
                kind=report.kind,
                batches=report.batches,
                epoch=report.epoch,
                values=report.values,
            )
            repository.update_trial(session, trial_id=trial_id, batches_trained=report.batches)

    def register_checkpoint(self, trial_id: int, report: CheckpointReport) -> None:
        with self._store.session() as session:
            repository.add_checkpoint(
                session,
                trial_id=trial_id,
                batches=report.batches,
                path=report.path,
                info=report.info,
            )

    def heartbeat(self, trial_id: int, beat: Heartbeat) -> None:
        with self._store.session() as session:
            repository.record_heartbeat(session, trial_id=trial_id)
            fields: dict[str, Any] = {"batches_trained": beat.batches}
            if beat.total_batches is not None:
                fields["total_batches"] = beat.total_batches
            repository.update_trial(session, trial_id=trial_id, **fields)

    def decide(self, trial_id: int) -> DecisionOut:
        """Stop when the experiment was paused or killed, else ask the searcher."""
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            experiment = repository.get_experiment(session, trial.experiment_id)
            latest = repository.latest_metrics(session, trial_id=trial_id, kind="validation")
            number, experiment_state = trial.number, experiment.state
        if experiment_state is not ExperimentState.RUNNING:
            return DecisionOut(action="stop", reason=f"experiment is {experiment_state.value}")
        if latest is None:
            return DecisionOut(action="continue")
        decision = self.searcher(trial.experiment_id).on_validation(
            trial_number=number, batches=latest.batches, metrics=latest.values
        )
        return DecisionOut(action=decision.action, reason=decision.reason)

    def finish_trial(self, trial_id: int, outcome: TrialOutcome) -> None:
        """Record the worker's own account of how it ended; the first final word wins."""
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            if trial.state.is_finished():
                return
            state = _OUTCOME_STATES[outcome.state]
            repository.update_trial(session, trial_id=trial_id, state=state, error=outcome.message)
        logger.info("trial %d reported %s", trial_id, outcome.state)

    def _trial_dir(self, session: Any, trial: Trial) -> Path:
        experiment = repository.get_experiment(session, trial.experiment_id)
        return Path(experiment.home_dir) / "trials" / f"{trial.number:04d}"


def _metric_out(metric: Metric) -> MetricOut:
    return MetricOut(
        kind=metric.kind.value,
        batches=metric.batches,
        epoch=metric.epoch,
        values=metric.values,
        reported_at=metric.reported_at,
    )


def _trial_out(trial: Trial) -> TrialOut:
    return TrialOut(
        id=trial.id,
        experiment_id=trial.experiment_id,
        number=trial.number,
        state=trial.state.value,
        hyperparameters=trial.hyperparameters,
        batches_trained=trial.batches_trained,
        total_batches=trial.total_batches,
        num_restarts=trial.num_restarts,
        started_at=trial.started_at,
        ended_at=trial.ended_at,
        last_heartbeat_at=trial.last_heartbeat_at,
        worker_pid=trial.worker_pid,
        log_path=trial.log_path,
        error=trial.error,
    )
