"""Bulk reads for the dashboard, kept apart from `repository`: columns rather than ORM objects,
and reads of only what is newer than what a cache has seen."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import JSON, func, select, type_coerce
from sqlalchemy.orm import Session

from trainyard.protocol import ExperimentState, MetricKind, TrialOut, TrialState
from trainyard.store.models import Experiment, Metric, Project, Trial

_TRIAL_COLUMNS = [getattr(Trial, name) for name in TrialOut.model_fields]


def experiment_trials(session: Session, *, experiment_id: int) -> list[TrialOut]:
    """The experiment's trials by number, read as columns (a thousand ORM objects cost more
    than the page they feed)."""
    query = (
        select(*_TRIAL_COLUMNS).where(Trial.experiment_id == experiment_id).order_by(Trial.number)
    )
    return [TrialOut.model_validate(row._mapping) for row in session.execute(query)]


def experiment_metric_series(
    session: Session, *, experiment_id: int, kind: MetricKind, metric: str
) -> list[tuple[int, int, int, float]]:
    """(report id, trial id, step, value) of one metric in all the experiment's reports of one
    kind, by trial, step and id (the trial index's order: no sort). The value is read inside
    the database (JSON path), so the other metrics of a report are never decoded; reports
    without it are left out."""
    value = _value(metric)
    query = (
        select(Metric.id, Metric.trial_id, Metric.batches, value)
        .join(Trial, Trial.id == Metric.trial_id)
        .where(Metric.kind == kind, Trial.experiment_id == experiment_id, value.is_not(None))
        .order_by(Metric.trial_id, Metric.batches, Metric.id)
    )
    return [(i, trial, step, float(found)) for i, trial, step, found in session.execute(query)]


def metric_series_since(
    session: Session, *, kind: MetricKind, metric: str, after_id: int
) -> list[tuple[int, int, int, float]]:
    """(report id, trial id, step, value) of one metric in the reports of one kind whose id is
    above `after_id`, of every experiment, by id: what a cache has not seen yet. Not filtered
    by experiment, so the database reads just the id range (the caller keeps its trials')."""
    value = _value(metric)
    query = (
        select(Metric.id, Metric.trial_id, Metric.batches, value)
        .where(Metric.id > after_id, Metric.kind == kind, value.is_not(None))
        .order_by(Metric.id)
    )
    return [(i, trial, step, float(found)) for i, trial, step, found in session.execute(query)]


def metric_names_since(
    session: Session, *, kind: MetricKind, after_id: int, trial_ids: Collection[int]
) -> set[str]:
    """The metric names in reports of one kind above `after_id` of the given trials."""
    query = select(Metric.trial_id, Metric.values).where(Metric.id > after_id, Metric.kind == kind)
    wanted = set(trial_ids)
    return {name for trial, values in session.execute(query) if trial in wanted for name in values}


def trials_of_experiment(
    session: Session, *, experiment_id: int, trial_ids: Collection[int]
) -> set[int]:
    """Those of `trial_ids` that belong to the experiment."""
    query = select(Trial.id).where(
        Trial.experiment_id == experiment_id, Trial.id.in_(list(trial_ids))
    )
    return set(session.scalars(query))


def newest_metric_id(session: Session) -> int:
    """The highest report id in the store (0 when empty)."""
    return session.scalar(select(Metric.id).order_by(Metric.id.desc()).limit(1)) or 0


def searcher_trial_numbers(session: Session, *, experiment_id: int) -> dict[int, int]:
    """The searcher's trial id -> trial number, for the experiment's trials that have one."""
    query = select(Trial.searcher_trial_id, Trial.number).where(
        Trial.experiment_id == experiment_id, Trial.searcher_trial_id.is_not(None)
    )
    return {searcher_id: number for searcher_id, number in session.execute(query)}


def _value(metric: str):
    return type_coerce(Metric.values, JSON)[metric].as_string()


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
    return dict(session.execute(select(Project.name, Project.share)).tuples().all())


def running_trials(session: Session, *, experiment_ids: Collection[int]) -> list[tuple[int, int]]:
    """(experiment id, trial number) of the RUNNING trials of these experiments."""
    query = select(Trial.experiment_id, Trial.number).where(
        Trial.experiment_id.in_(list(experiment_ids)), Trial.state == TrialState.RUNNING
    )
    return [(experiment_id, number) for experiment_id, number in session.execute(query)]
