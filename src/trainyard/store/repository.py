"""Reading and writing store rows; the only place that builds queries.

Every function takes the caller's `Session` and never commits: the caller's unit of work
(`Store.session()`) decides what lands together. Lookups of rows a user named raise
NotFoundError with a message the CLI can print as is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.errors import NotFoundError
from trainyard.protocol import MAX_INT, CheckpointEntry
from trainyard.store.models import (
    DEFAULT_PROJECT,
    Checkpoint,
    CheckpointState,
    Experiment,
    ExperimentState,
    Metric,
    MetricKind,
    Project,
    Trial,
    TrialState,
    WorkerCredential,
    utcnow,
)

UPDATABLE_TRIAL_FIELDS = frozenset(
    {
        "state",
        "hyperparameters",
        "started_at",
        "ended_at",
        "last_heartbeat_at",
        "batches_trained",
        "total_batches",
        "num_restarts",
        "log_path",
        "error",
        "worker_key",
        "searcher_trial_id",
    }
)
"""Trial columns `update_trial` may set; id, experiment, number and created_at never change."""


# --- experiments -------------------------------------------------------------------------------


def create_experiment(
    session: Session,
    *,
    name: str,
    config: dict[str, Any],
    home_dir: str,
    project_id: int | None = None,
    owner_id: int | None = None,
) -> Experiment:
    """A new QUEUED experiment, in the `default` project unless `project_id` says otherwise."""
    now = utcnow()
    experiment = Experiment(
        name=name,
        state=ExperimentState.QUEUED,
        config=config,
        home_dir=home_dir,
        created_at=now,
        updated_at=now,
        project_id=project_id if project_id is not None else default_project_id(session),
        owner_id=owner_id,
    )
    session.add(experiment)
    session.flush()
    return experiment


def get_experiment(
    session: Session, ref: int | str, *, project_ids: Collection[int] | None = None
) -> Experiment:
    """By id (an int or a string of digits), else the newest experiment with that name.

    Names are not unique because reruns share them; the newest is what a user means. With
    `project_ids`, experiments of other projects are treated exactly as missing ones, so a
    caller learns nothing about projects they do not belong to.
    """
    if isinstance(ref, int) or (ref.isascii() and ref.isdigit()):
        experiment = session.get(Experiment, int(ref)) if int(ref) <= MAX_INT else None
        if experiment is None or (
            project_ids is not None and experiment.project_id not in project_ids
        ):
            raise NotFoundError(
                f"no experiment with id {ref}; run `trainyard list` to see experiments"
            )
        return experiment
    newest = select(Experiment).where(Experiment.name == ref).order_by(Experiment.id.desc())
    if project_ids is not None:
        newest = newest.where(Experiment.project_id.in_(list(project_ids)))
    experiment = session.scalars(newest.limit(1)).first()
    if experiment is None:
        raise NotFoundError(
            f"no experiment named {ref!r}; run `trainyard list` to see experiments"
        )
    return experiment


def list_experiments(
    session: Session, *, limit: int = 100, project_ids: Collection[int] | None = None
) -> list[Experiment]:
    """Newest first (ids only grow, so id order is creation order); with `project_ids`, only
    those projects' experiments."""
    query = select(Experiment).order_by(Experiment.id.desc()).limit(limit)
    if project_ids is not None:
        query = query.where(Experiment.project_id.in_(list(project_ids)))
    return list(session.scalars(query))


def experiment_ids_in_states(session: Session, states: Iterable[ExperimentState]) -> list[int]:
    """Ids of every experiment in one of `states`, oldest first (a server's work list)."""
    query = select(Experiment.id).where(Experiment.state.in_(list(states)))
    return list(session.scalars(query.order_by(Experiment.id)))


def default_project_id(session: Session) -> int:
    """The id of the `default` project, which migration 0003 creates in every store."""
    return session.scalars(select(Project.id).where(Project.name == DEFAULT_PROJECT)).one()


def set_experiment_state(
    session: Session,
    *,
    experiment_id: int,
    state: ExperimentState | str,
    message: str | None = None,
) -> Experiment:
    """Move to `state`; `ended_at` and `message` describe the current end, so a resumed
    (unfinished) experiment has neither."""
    experiment = get_experiment(session, experiment_id)
    experiment.state = ExperimentState(state)
    experiment.message = message
    experiment.ended_at = utcnow() if experiment.state.is_finished() else None
    session.flush()
    return experiment


# --- trials ------------------------------------------------------------------------------------


def create_trial(
    session: Session, *, experiment_id: int, hyperparameters: dict[str, Any]
) -> Trial:
    """A QUEUED trial numbered after the experiment's last one (0 for the first).

    Two sessions creating trials for the same experiment at once collide on the
    (experiment_id, number) unique constraint rather than sharing a number.
    """
    get_experiment(session, experiment_id)
    last = session.scalar(
        select(func.max(Trial.number)).where(Trial.experiment_id == experiment_id)
    )
    trial = Trial(
        experiment_id=experiment_id,
        number=0 if last is None else last + 1,
        state=TrialState.QUEUED,
        hyperparameters=hyperparameters,
        batches_trained=0,
        num_restarts=0,
    )
    session.add(trial)
    session.flush()
    return trial


def get_trial(
    session: Session, trial_id: int, *, project_ids: Collection[int] | None = None
) -> Trial:
    """By id; with `project_ids`, other projects' trials are reported missing."""
    trial = session.get(Trial, trial_id) if 0 <= trial_id <= MAX_INT else None
    if trial is not None and project_ids is not None:
        experiment = session.get(Experiment, trial.experiment_id)
        trial = trial if experiment is not None and experiment.project_id in project_ids else None
    if trial is None:
        raise NotFoundError(
            f"no trial with id {trial_id}; run `trainyard list` to see experiments and trials"
        )
    return trial


def list_trials(session: Session, *, experiment_id: int) -> list[Trial]:
    query = select(Trial).where(Trial.experiment_id == experiment_id).order_by(Trial.number)
    return list(session.scalars(query))


def update_trial(session: Session, *, trial_id: int, **fields: Any) -> Trial:
    """Set the given columns; a state change also keeps the timestamps consistent.

    Entering RUNNING sets `started_at` the first time and restarts the heartbeat clock (else a
    resumed trial would look stale at once); entering a finished state sets `ended_at`, and
    leaving one clears it. Timestamps passed explicitly win.
    """
    unknown = sorted(set(fields) - UPDATABLE_TRIAL_FIELDS)
    if unknown:
        raise ValueError(
            f"cannot update trial field(s) {', '.join(unknown)}; "
            f"updatable: {', '.join(sorted(UPDATABLE_TRIAL_FIELDS))}"
        )
    trial = get_trial(session, trial_id)
    if "state" in fields:
        fields["state"] = new_state = TrialState(fields["state"])
        now = utcnow()
        if new_state is TrialState.RUNNING and trial.state is not TrialState.RUNNING:
            fields.setdefault("last_heartbeat_at", now)
            if trial.started_at is None:
                fields.setdefault("started_at", now)
        if new_state.is_finished():
            fields.setdefault("ended_at", now)
        else:
            fields.setdefault("ended_at", None)
    for name, value in fields.items():
        setattr(trial, name, value)
    session.flush()
    return trial


def record_heartbeat(session: Session, *, trial_id: int) -> None:
    get_trial(session, trial_id).last_heartbeat_at = utcnow()
    session.flush()


def stale_running_trials(session: Session, *, older_than: datetime) -> list[Trial]:
    """RUNNING trials not heard from since `older_than`: their worker is likely gone."""
    last_seen = func.coalesce(Trial.last_heartbeat_at, Trial.started_at)
    query = (
        select(Trial)
        .where(Trial.state == TrialState.RUNNING, last_seen < older_than)
        .order_by(Trial.id)
    )
    return list(session.scalars(query))


# --- metrics -----------------------------------------------------------------------------------


def _metric_kind(kind: str) -> MetricKind:
    try:
        return MetricKind(kind)
    except ValueError:
        choices = " or ".join(repr(k.value) for k in MetricKind)
        raise ValueError(f"metric kind must be {choices}, not {kind!r}") from None


def add_metrics(
    session: Session,
    *,
    trial_id: int,
    kind: str,
    batches: int,
    epoch: float,
    values: dict[str, float],
) -> Metric:
    metric_kind = _metric_kind(kind)
    get_trial(session, trial_id)
    metric = Metric(
        trial_id=trial_id,
        kind=metric_kind,
        batches=batches,
        epoch=epoch,
        values={name: float(value) for name, value in values.items()},
    )
    session.add(metric)
    session.flush()
    return metric


def list_metrics(session: Session, *, trial_id: int, kind: str | None = None) -> list[Metric]:
    query = select(Metric).where(Metric.trial_id == trial_id)
    if kind is not None:
        query = query.where(Metric.kind == _metric_kind(kind))
    return list(session.scalars(query.order_by(Metric.batches, Metric.id)))


def latest_metrics(session: Session, *, trial_id: int, kind: str) -> Metric | None:
    """The report at the highest step (the last one sent if several share it)."""
    query = (
        select(Metric)
        .where(Metric.trial_id == trial_id, Metric.kind == _metric_kind(kind))
        .order_by(Metric.batches.desc(), Metric.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


# --- checkpoints -------------------------------------------------------------------------------


def add_checkpoint(
    session: Session, *, trial_id: int, batches: int, path: str, info: dict[str, Any]
) -> Checkpoint:
    get_trial(session, trial_id)
    checkpoint = Checkpoint(
        trial_id=trial_id, batches=batches, path=path, info=info, state=CheckpointState.ACTIVE
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def list_checkpoints(
    session: Session, *, trial_id: int, include_deleted: bool = False
) -> list[Checkpoint]:
    """Newest first, so the first entry is the one to resume from."""
    query = select(Checkpoint).where(Checkpoint.trial_id == trial_id)
    if not include_deleted:
        query = query.where(Checkpoint.state == CheckpointState.ACTIVE)
    return list(session.scalars(query.order_by(Checkpoint.id.desc())))


def mark_checkpoint_deleted(session: Session, *, checkpoint_id: int) -> Checkpoint:
    """Record that the file is gone; the row stays so the trial's history stays complete."""
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise NotFoundError(f"no checkpoint with id {checkpoint_id}")
    checkpoint.state = CheckpointState.DELETED
    session.flush()
    return checkpoint


def replace_checkpoints(
    session: Session, *, trial_id: int, present: Sequence[CheckpointEntry]
) -> None:
    """Make the trial's ACTIVE checkpoints exactly `present` (what is on disk): new folders
    are added, active rows whose folder is gone become DELETED."""
    get_trial(session, trial_id)
    by_path = {entry.path: entry for entry in present}
    for checkpoint in list_checkpoints(session, trial_id=trial_id):
        if by_path.pop(checkpoint.path, None) is None:
            checkpoint.state = CheckpointState.DELETED
    for entry in sorted(by_path.values(), key=lambda e: e.batches):
        add_checkpoint(
            session,
            trial_id=trial_id,
            batches=entry.batches,
            path=entry.path,
            info={"epoch": entry.epoch},
        )
    session.flush()


# --- worker credentials ------------------------------------------------------------------------


def issue_worker_credential(session: Session, *, trial_id: int, token_sha256: str) -> int:
    """Record a new attempt's credential, revoking any the trial still had; returns the
    attempt number (1 for the first launch)."""
    get_trial(session, trial_id)
    revoke_worker_credentials(session, trial_id=trial_id)
    last = session.scalar(
        select(func.max(WorkerCredential.attempt)).where(WorkerCredential.trial_id == trial_id)
    )
    attempt = 1 if last is None else last + 1
    session.add(
        WorkerCredential(
            trial_id=trial_id, attempt=attempt, token_sha256=token_sha256, issued_at=utcnow()
        )
    )
    session.flush()
    return attempt


def find_worker_credential(session: Session, *, token_sha256: str) -> WorkerCredential | None:
    """The credential with that hash, revoked or not; None for a token never issued."""
    query = select(WorkerCredential).where(WorkerCredential.token_sha256 == token_sha256)
    return session.scalars(query).first()


def revoke_worker_credentials(session: Session, *, trial_id: int) -> None:
    """End every live credential of the trial (its attempt is over)."""
    query = select(WorkerCredential).where(
        WorkerCredential.trial_id == trial_id, WorkerCredential.revoked_at.is_(None)
    )
    now = utcnow()
    for credential in session.scalars(query):
        credential.revoked_at = now
    session.flush()
