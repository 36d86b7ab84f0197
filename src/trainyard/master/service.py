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
from trainyard.errors import TrainyardError
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
from trainyard.search import Searcher, TrialResult, make_searcher, validate_searcher
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

_CONTROL = {
    "pause": (ExperimentState.PAUSED, {ExperimentState.RUNNING, ExperimentState.QUEUED}),
    "activate": (ExperimentState.RUNNING, {ExperimentState.PAUSED}),
    "kill": (
        ExperimentState.CANCELED,
        {ExperimentState.RUNNING, ExperimentState.QUEUED, ExperimentState.PAUSED},
    ),
}
_PAST = {"pause": "paused", "activate": "activated", "kill": "killed"}

_OUTCOME_STATES = {
    "completed": TrialState.COMPLETED,
    "stopped": TrialState.STOPPED,
    "paused": TrialState.PAUSED,
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
        validate_searcher(config)
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
                    self.experiment_config(experiment_id),
                    storage_url=self._settings.resolved_database_url(),
                    experiment_id=experiment_id,
                )
            return self._searchers[experiment_id]

    def recover_searcher(self, experiment_id: int) -> None:
        """After a restart, re-propose searcher trials that were handed out but never stored."""
        with self._store.session() as session:
            trials = repository.list_trials(session, experiment_id=experiment_id)
            known = {t.searcher_trial_id for t in trials if t.searcher_trial_id is not None}
        self.searcher(experiment_id).recover(known)

    def set_experiment_state(
        self, experiment_id: int, state: ExperimentState, message: str | None = None
    ) -> None:
        with self._store.session() as session:
            repository.set_experiment_state(
                session, experiment_id=experiment_id, state=state, message=message
            )

    def control_experiment(self, ref: int | str, action: str) -> ExperimentOut:
        """`trainyard pause | activate | kill`: a state change the runner follows.

        Raises:
            TrainyardError: the action does not apply to the experiment's current state.
        """
        experiment = self.get_experiment(ref)
        current = ExperimentState(experiment.state)
        target, allowed = _CONTROL[action]
        if current not in allowed:
            names = " or ".join(sorted(s.value for s in allowed))
            raise TrainyardError(
                f"experiment {experiment.id} ({experiment.name}) is {current.value}; "
                f"only a {names} experiment can be {_PAST[action]}"
            )
        self.set_experiment_state(experiment.id, target)
        return self.get_experiment(experiment.id)

    def create_trials(self, experiment_id: int, *, num_free: int) -> list[int]:
        """Ask the searcher for new trials while slots are free; returns the new trial ids."""
        with self._store.session() as session:
            num_created = len(repository.list_trials(session, experiment_id=experiment_id))
        proposals = self.searcher(experiment_id).next_trials(
            num_created=num_created, num_free=num_free
        )
        created = []
        with self._store.session() as session:
            for proposal in proposals:
                trial = repository.create_trial(
                    session, experiment_id=experiment_id, hyperparameters=proposal.hyperparameters
                )
                trial.searcher_trial_id = proposal.searcher_trial_id
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
                staging_dir=str(self._settings.resolved_home() / "cache" / "staged"),
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
            searcher_trial_id, experiment_state = trial.searcher_trial_id, experiment.state
        if experiment_state is not ExperimentState.RUNNING:
            return DecisionOut(action="stop", reason=f"experiment is {experiment_state.value}")
        if latest is None:
            return DecisionOut(action="continue")
        decision = self.searcher(trial.experiment_id).on_validation(
            searcher_trial_id=searcher_trial_id, batches=latest.batches, metrics=latest.values
        )
        return DecisionOut(action=decision.action, reason=decision.reason)

    def finish_trial(self, trial_id: int, outcome: TrialOutcome) -> None:
        """Record the worker's own account of how it ended; the first final word wins.

        Completed and early-stopped trials are told to the searcher now; an errored one only
        once the runner has given up retrying it (`fail_or_retry`).
        """
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            if trial.state.is_finished():
                return
            state = _OUTCOME_STATES[outcome.state]
            repository.update_trial(session, trial_id=trial_id, state=state, error=outcome.message)
        logger.info("trial %d reported %s", trial_id, outcome.state)
        if outcome.state in ("completed", "stopped"):
            self._tell_searcher(trial_id, outcome.state)

    def fail_or_retry(self, trial_id: int, *, reason: str, max_restarts: int) -> bool:
        """After a failure: requeue the trial (it resumes from its checkpoint) while restarts
        remain, else mark it errored for good. Returns True when it was requeued."""
        trial = self.get_trial(trial_id)
        if trial.num_restarts < max_restarts:
            self.update_trial(
                trial_id,
                state=TrialState.QUEUED,
                num_restarts=trial.num_restarts + 1,
                error=f"restart {trial.num_restarts + 1} of {max_restarts} after: {reason}",
            )
            return True
        self.update_trial(trial_id, state=TrialState.ERRORED, error=reason)
        self._tell_searcher(trial_id, "errored")
        return False

    def _tell_searcher(self, trial_id: int, result: TrialResult) -> None:
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            experiment_id, searcher_trial_id = trial.experiment_id, trial.searcher_trial_id
        config = self.experiment_config(experiment_id)
        best = self.best_validation(
            trial_id, metric=config.searcher.metric, mode=config.searcher.mode
        )
        self.searcher(experiment_id).on_trial_end(
            searcher_trial_id=searcher_trial_id,
            result=result,
            best_value=best.values[config.searcher.metric] if best else None,
        )

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
