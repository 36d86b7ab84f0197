"""Bulk reads for the dashboard, kept apart from `repository`: columns rather than ORM objects."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainyard.protocol import ExperimentState, TrialOut, TrialState
from trainyard.store.models import Experiment, Project, Trial

_TRIAL_COLUMNS = [getattr(Trial, name) for name in TrialOut.model_fields]


def experiment_trials(session: Session, *, experiment_id: int) -> list[TrialOut]:
    """The experiment's trials by number, read as columns (a thousand ORM objects cost more
    than the page they feed)."""
    query = (
        select(*_TRIAL_COLUMNS).where(Trial.experiment_id == experiment_id).order_by(Trial.number)
    )
    return [TrialOut.model_validate(row._mapping) for row in session.execute(query)]


def searcher_trial_numbers(session: Session, *, experiment_id: int) -> dict[int, int]:
    """The searcher's trial id -> trial number, for the experiment's trials that have one."""
    query = select(Trial.searcher_trial_id, Trial.number).where(
        Trial.experiment_id == experiment_id, Trial.searcher_trial_id.is_not(None)
    )
    return {searcher_id: number for searcher_id, number in session.execute(query)}


def unfinished_experiments(
    session: Session, *, project_ids: Collection[int] | None = None
) -> list[tuple[int, str, str, dict[str, int]]]:
    """(id, name, project, {trial state: count}) of every QUEUED, RUNNING or PAUSED experiment
    (with `project_ids`, of those projects only), for the pools page."""
    active = (ExperimentState.QUEUED, ExperimentState.RUNNING, ExperimentState.PAUSED)
    query = (
        select(Experiment.id, Experiment.name, Project.name, Trial.state, func.count(Trial.id))
        .join(Project, Project.id == Experiment.project_id)
        .outerjoin(Trial, Trial.experiment_id == Experiment.id)
        .where(Experiment.state.in_(active))
        .group_by(Experiment.id, Experiment.name, Project.name, Trial.state)
        .order_by(Experiment.id)
    )
    if project_ids is not None:
        query = query.where(Experiment.project_id.in_(list(project_ids)))
    found: dict[int, tuple[int, str, str, dict[str, int]]] = {}
    for experiment_id, name, project, state, count in session.execute(query):
        entry = found.setdefault(experiment_id, (experiment_id, name, project, {}))
        if state is not None:
            entry[3][str(state)] = count
    return list(found.values())


def project_shares(session: Session) -> dict[str, float | None]:
    """Project name -> its configured share (None: the server's default), for the pools page."""
    return {name: share for name, share in session.execute(select(Project.name, Project.share))}


def running_trials(session: Session, *, experiment_ids: Collection[int]) -> list[tuple[int, int]]:
    """(experiment id, trial number) of the RUNNING trials of these experiments."""
    query = select(Trial.experiment_id, Trial.number).where(
        Trial.experiment_id.in_(list(experiment_ids)), Trial.state == TrialState.RUNNING
    )
    return [(experiment_id, number) for experiment_id, number in session.execute(query)]
