"""Claiming queued trials: QUEUED -> RUNNING only while still queued and within the limits.

Two parties start queued trials of a packed experiment: the runner (a new worker) and a
running pack with a free place (a join, master/pack_joins.py). Each claims a trial with one
conditional UPDATE, so a trial is started by exactly one of them, and the same statement
counts the experiment's RUNNING trials, so together they never exceed its
`max_concurrent_trials`. On PostgreSQL the experiment's row is locked first (`FOR UPDATE`),
so two claims of one experiment take turns and each counts the other's; SQLite runs one
writing statement at a time anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.orm import Session

from trainyard.protocol import TrialState
from trainyard.store.models import Experiment, Project, Trial, utcnow


@dataclass(frozen=True)
class TrialLimit:
    """At most `limit` RUNNING trials among the experiments `experiment_ids`; `name` says which
    limit it is, for the answer that it is reached."""

    name: str
    limit: int
    experiment_ids: tuple[int, ...]


def claim_queued_trial(
    session: Session,
    *,
    experiment_id: int,
    trial_id: int,
    limits: list[TrialLimit],
    worker_key: int | None,
) -> bool:
    """Make the queued trial RUNNING under `worker_key` if it is still QUEUED and every limit
    has room; False when it was not (another party claimed it, or a limit is reached)."""
    session.execute(select(Experiment.id).where(Experiment.id == experiment_id).with_for_update())
    now = utcnow()
    query = update(Trial).where(Trial.id == trial_id, Trial.state == TrialState.QUEUED)
    for limit in limits:
        query = query.where(_num_running(limit.experiment_ids) < limit.limit)
    claimed = session.execute(
        query.values(
            state=TrialState.RUNNING,
            worker_key=worker_key,
            last_heartbeat_at=now,
            started_at=func.coalesce(Trial.started_at, now),
            ended_at=None,
        ).execution_options(synchronize_session=False)
    )
    session.expire_all()
    return claimed.rowcount == 1


def reached_limit(session: Session, limits: list[TrialLimit]) -> TrialLimit | None:
    """The first of `limits` with no room left now, if any."""
    for limit in limits:
        if session.scalar(select(_num_running(limit.experiment_ids))) >= limit.limit:
            return limit
    return None


def project_trial_limits(session: Session, *, experiment_id: int) -> list[TrialLimit]:
    """The project's trial quotas that bind the experiment (`max_concurrent_trials` of the
    project, `user_max_concurrent_trials` of its owner there), as limits on RUNNING trials."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return []
    project = session.get(Project, experiment.project_id)
    if project is None:
        return []
    limits = []
    if project.user_max_concurrent_trials is not None and experiment.owner_id is not None:
        owned = session.scalars(
            select(Experiment.id).where(
                Experiment.project_id == project.id, Experiment.owner_id == experiment.owner_id
            )
        )
        limits.append(
            TrialLimit(
                f"quota user_max_concurrent_trials of project {project.name!r}",
                project.user_max_concurrent_trials,
                tuple(owned),
            )
        )
    if project.max_concurrent_trials is not None:
        everyone = session.scalars(
            select(Experiment.id).where(Experiment.project_id == project.id)
        )
        limits.append(
            TrialLimit(
                f"quota max_concurrent_trials of project {project.name!r}",
                project.max_concurrent_trials,
                tuple(everyone),
            )
        )
    return limits


def _num_running(experiment_ids: tuple[int, ...]) -> ScalarSelect[int]:
    return (
        select(func.count(Trial.id))
        .where(Trial.experiment_id.in_(experiment_ids), Trial.state == TrialState.RUNNING)
        .scalar_subquery()
    )
