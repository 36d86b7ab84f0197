"""The Master's service layer: experiment lifecycle, trials, searchers and worker credentials.

The HTTP handlers, the experiment runner and the CLI all call this; it is the only code that
turns requests into store writes, so the store stays consistent whoever calls. What workers
report goes through `master.reports.TrialReports`, which builds on this.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.auth.api_tokens import token_sha256
from trainyard.config import ExperimentConfig, parse_experiment
from trainyard.config.trial import ScriptTrialConfig, TrialConfig, resolve_any_trial
from trainyard.errors import TrainyardError
from trainyard.protocol import (
    WORKER_TOKEN_PREFIX,
    CheckpointOut,
    ExperimentOut,
    ExperimentState,
    MetricKind,
    MetricOut,
    TrialOut,
    TrialState,
)
from trainyard.search import Searcher, TrialResult, make_searcher, validate_searcher
from trainyard.settings import Settings
from trainyard.store import Experiment, Metric, Project, Store, Trial, User, repository
from trainyard.tracking import Tracking, TrackingEvent, TrialEnded, TrialStarted

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


class MasterService:
    """Experiment and trial operations over one store; safe to call from several threads."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._searchers: dict[int, Searcher] = {}
        self._lock = threading.Lock()
        self.tracking = Tracking()
        """Copies of trial records for the experiments' trackers (MLflow, TensorBoard)."""

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(
        self,
        config: ExperimentConfig,
        *,
        project: Project | None = None,
        owner_id: int | None = None,
    ) -> int:
        """Record a validated experiment and give it a folder; trials are created by the runner.

        Without `project` (embedded runs) it joins the `default` project and its folder is
        <home>/experiments/<id>-<name>; a project's experiments live under
        <home>/projects/<project>/experiments/, so each project's checkpoints and logs sit
        in one folder that can be measured, capped and backed up on its own.
        """
        validate_searcher(config)
        root = self.settings.resolved_home()
        if project is not None:
            root = root / "projects" / project.name
        with self.store.session() as session:
            experiment = repository.create_experiment(
                session,
                name=config.name,
                config=config.model_dump(mode="json"),
                home_dir="",
                project_id=project.id if project is not None else None,
                owner_id=owner_id,
            )
            home = root / "experiments" / f"{experiment.id:05d}-{config.name}"
            experiment.home_dir = str(home)
            experiment_id = experiment.id
        home.mkdir(parents=True, exist_ok=True)
        return experiment_id

    def experiment_config(self, experiment_id: int) -> ExperimentConfig:
        """The experiment's config, re-validated (catches a store written by another version)."""
        with self.store.session() as session:
            experiment = repository.get_experiment(session, experiment_id)
            return parse_experiment(experiment.config, source=f"experiment {experiment_id}")

    def searcher(self, experiment_id: int) -> Searcher:
        """The experiment's searcher, rebuilt from the stored config after a Master restart."""
        with self._lock:
            if experiment_id not in self._searchers:
                self._searchers[experiment_id] = make_searcher(
                    self.experiment_config(experiment_id),
                    storage_url=self.settings.resolved_database_url(),
                    experiment_id=experiment_id,
                )
            return self._searchers[experiment_id]

    def recover_searcher(self, experiment_id: int) -> None:
        """After a restart, re-propose searcher trials that were handed out but never stored."""
        with self.store.session() as session:
            trials = repository.list_trials(session, experiment_id=experiment_id)
            known = {t.searcher_trial_id for t in trials if t.searcher_trial_id is not None}
        self.searcher(experiment_id).recover(known)

    def set_experiment_state(
        self, experiment_id: int, state: ExperimentState, message: str | None = None
    ) -> None:
        with self.store.session() as session:
            repository.set_experiment_state(
                session, experiment_id=experiment_id, state=state, message=message
            )

    def control_experiment(self, ref: int | str, action: str) -> ExperimentOut:
        """`trainyard pause | activate | kill`: a state change the runner follows.

        Raises:
            TrainyardError: the action does not apply to the experiment's current state.
        """
        experiment = self.get_experiment(ref)
        target, allowed = _CONTROL[action]
        if experiment.state not in allowed:
            names = " or ".join(sorted(s.value for s in allowed))
            raise TrainyardError(
                f"experiment {experiment.id} ({experiment.name}) is {experiment.state.value}; "
                f"only a {names} experiment can be {_PAST[action]}"
            )
        self.set_experiment_state(experiment.id, target)
        return self.get_experiment(experiment.id)

    def create_trials(self, experiment_id: int, *, num_free: int) -> list[int]:
        """Ask the searcher for new trials while slots are free; returns the new trial ids."""
        with self.store.session() as session:
            num_created = len(repository.list_trials(session, experiment_id=experiment_id))
        proposals = self.searcher(experiment_id).next_trials(
            num_created=num_created, num_free=num_free
        )
        created = []
        with self.store.session() as session:
            for proposal in proposals:
                trial = repository.create_trial(
                    session, experiment_id=experiment_id, hyperparameters=proposal.hyperparameters
                )
                trial.searcher_trial_id = proposal.searcher_trial_id
                trial.log_path = str(self.trial_dir(session, trial) / "worker.log")
                created.append(_trial_out(trial))
        for trial in created:
            self.track(TrialStarted(experiment_id, trial.id, trial.number, trial.hyperparameters))
        return [trial.id for trial in created]

    def get_experiment(self, ref: int | str) -> ExperimentOut:
        with self.store.session() as session:
            return _experiment_outs(session, [repository.get_experiment(session, ref)])[0]

    def list_experiments(
        self, *, limit: int = 100, project_ids: Collection[int] | None = None
    ) -> list[ExperimentOut]:
        """Newest first; with `project_ids`, only those projects' experiments."""
        with self.store.session() as session:
            found = repository.list_experiments(session, limit=limit, project_ids=project_ids)
            return _experiment_outs(session, found)

    # -- trials ------------------------------------------------------------------------------

    def list_trials(self, experiment_id: int) -> list[TrialOut]:
        with self.store.session() as session:
            return [
                _trial_out(t) for t in repository.list_trials(session, experiment_id=experiment_id)
            ]

    def get_trial(self, trial_id: int) -> TrialOut:
        with self.store.session() as session:
            return _trial_out(repository.get_trial(session, trial_id))

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        with self.store.session() as session:
            repository.update_trial(session, trial_id=trial_id, **fields)

    def trial_config(self, trial_id: int) -> TrialConfig | ScriptTrialConfig:
        """The trial's resolved config: its experiment's with its hyperparameters applied."""
        trial = self.get_trial(trial_id)
        config = self.experiment_config(trial.experiment_id)
        return resolve_any_trial(config, trial.hyperparameters)

    def trial_metrics(self, trial_id: int, kind: MetricKind | None = None) -> list[MetricOut]:
        with self.store.session() as session:
            return [
                _metric_out(m)
                for m in repository.list_metrics(session, trial_id=trial_id, kind=kind)
            ]

    def latest_metrics(self, trial_id: int) -> tuple[MetricOut | None, MetricOut | None]:
        """The newest training and validation reports of a trial (for live tables)."""
        with self.store.session() as session:
            found = [
                repository.latest_metrics(session, trial_id=trial_id, kind=kind)
                for kind in (MetricKind.TRAINING, MetricKind.VALIDATION)
            ]
            training, validation = (_metric_out(m) if m else None for m in found)
        return training, validation

    def best_validation(self, trial_id: int, *, metric: str, mode: str) -> MetricOut | None:
        """The validation report with the best value of `metric` (max or min)."""
        reports = [
            m for m in self.trial_metrics(trial_id, MetricKind.VALIDATION) if metric in m.values
        ]
        if not reports:
            return None
        sign = 1.0 if mode == "max" else -1.0
        return max(reports, key=lambda m: sign * m.values[metric])

    def trial_checkpoints(self, trial_id: int) -> list[CheckpointOut]:
        """The trial's active checkpoints (those on disk), newest first."""
        with self.store.session() as session:
            repository.get_trial(session, trial_id)
            return [
                CheckpointOut(
                    batches=c.batches,
                    path=c.path,
                    epoch=c.info.get("epoch"),
                    created_at=c.created_at,
                )
                for c in repository.list_checkpoints(session, trial_id=trial_id)
            ]

    def latest_checkpoint_path(self, trial_id: int) -> str | None:
        checkpoints = self.trial_checkpoints(trial_id)
        return checkpoints[0].path if checkpoints else None

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
        self.tell_searcher(trial_id, "errored")
        return False

    def tell_searcher(self, trial_id: int, result: TrialResult) -> None:
        """Tell the searcher, once, how a trial ended for good, with its best value."""
        with self.store.session() as session:
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
        self.track_trial_end(trial_id, best)

    # -- tracking ----------------------------------------------------------------------------

    def track(self, event: TrackingEvent) -> None:
        """Hand a record to its experiment's trackers, setting them up on first use."""
        if not self.tracking.is_configured(event.experiment_id):
            config = self.experiment_config(event.experiment_id)
            self.tracking.configure(event.experiment_id, config.name, config.tracking)
        self.tracking.emit(event)

    def track_trial_end(self, trial_id: int, best: MetricOut | None = None) -> None:
        """Tell the trackers how a trial ended, with its best validation and checkpoint."""
        trial = self.get_trial(trial_id)
        if best is None:
            config = self.experiment_config(trial.experiment_id)
            best = self.best_validation(
                trial_id, metric=config.searcher.metric, mode=config.searcher.mode
            )
        checkpoints = self.trial_checkpoints(trial_id)
        at_best = [c for c in checkpoints if best is not None and c.batches == best.batches]
        chosen = (at_best or checkpoints or [None])[0]
        self.track(
            TrialEnded(
                experiment_id=trial.experiment_id,
                trial_id=trial.id,
                trial_number=trial.number,
                state=trial.state,
                hyperparameters=trial.hyperparameters,
                best_metrics=best.values if best else {},
                checkpoint=Path(chosen.path) if chosen else None,
            )
        )

    def trial_dir(self, session: Session, trial: Trial) -> Path:
        experiment = repository.get_experiment(session, trial.experiment_id)
        return Path(experiment.home_dir) / "trials" / f"{trial.number:04d}"

    # -- worker credentials ------------------------------------------------------------------

    def issue_worker_token(self, trial_id: int) -> str:
        """A fresh credential for the trial's next attempt; any earlier one stops working.

        Only its hash is stored, so the token exists only in the launched worker's
        environment.
        """
        token = WORKER_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.session() as session:
            attempt = repository.issue_worker_credential(
                session, trial_id=trial_id, token_sha256=token_sha256(token)
            )
        logger.info("trial %d: credential issued for attempt %d", trial_id, attempt)
        return token

    def end_attempt(self, trial_id: int) -> None:
        """The trial's current attempt is over: its worker credential stops working."""
        with self.store.session() as session:
            repository.revoke_worker_credentials(session, trial_id=trial_id)


def _metric_out(metric: Metric) -> MetricOut:
    return MetricOut(
        kind=metric.kind,
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
        state=trial.state,
        hyperparameters=trial.hyperparameters,
        batches_trained=trial.batches_trained,
        total_batches=trial.total_batches,
        num_restarts=trial.num_restarts,
        started_at=trial.started_at,
        ended_at=trial.ended_at,
        last_heartbeat_at=trial.last_heartbeat_at,
        worker_key=trial.worker_key,
        log_path=trial.log_path,
        error=trial.error,
    )


def _experiment_outs(session: Session, experiments: list[Experiment]) -> list[ExperimentOut]:
    """Each experiment with its project, owner and number of trials, in four queries however
    many there are (the dashboard lists thousands)."""
    ids = [e.id for e in experiments]
    counts = dict(
        session.execute(
            select(Trial.experiment_id, func.count())
            .where(Trial.experiment_id.in_(ids))
            .group_by(Trial.experiment_id)
        ).all()
    )
    project_ids = {e.project_id for e in experiments}
    projects = dict(
        session.execute(select(Project.id, Project.name).where(Project.id.in_(project_ids))).all()
    )
    owner_ids = {e.owner_id for e in experiments if e.owner_id is not None}
    owners = {
        u.id: u.username or u.subject
        for u in session.scalars(select(User).where(User.id.in_(owner_ids)))
    }
    return [
        ExperimentOut(
            id=e.id,
            name=e.name,
            project=projects[e.project_id],
            owner=owners.get(e.owner_id) if e.owner_id is not None else None,
            state=e.state,
            created_at=e.created_at,
            ended_at=e.ended_at,
            message=e.message,
            num_trials=counts.get(e.id, 0),
        )
        for e in experiments
    ]
