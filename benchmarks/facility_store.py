"""What the facility benchmark reads from the store once every experiment ended.

Straight from the database the servers wrote (not through the API), so a bug in the API
cannot hide a lost trial: each trial's state, its attempts' validation steps, and the
slot-seconds each project used.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select

from trainyard.store import Experiment, Metric, Project, Trial, open_store
from trainyard.store.models import MetricKind, TrialState


class ProjectUsage(BaseModel):
    name: str
    share: float
    slot_seconds: float
    """Slot-seconds inside the contended window (every project still had work waiting)."""


class StoreReport(BaseModel):
    trials: int
    trials_lost: int
    """Trials that did not complete."""
    trials_run_twice: int
    """Trials with a validation step reported more than once (work done twice)."""
    contended_window_s: float
    projects: list[ProjectUsage]
    jain_index: float
    """Jain's fairness index of slot-seconds / share over the projects: 1 is perfectly fair."""


def read_store(database_url: str, *, shares: dict[str, float]) -> StoreReport:
    store = open_store(database_url)
    try:
        with store.session() as session:
            rows = session.execute(
                select(Trial, Project.name)
                .join(Experiment, Trial.experiment_id == Experiment.id)
                .join(Project, Experiment.project_id == Project.id)
                .where(Project.name.in_(shares))
            ).all()
            steps = session.execute(
                select(Metric.trial_id, Metric.batches).where(Metric.kind == MetricKind.VALIDATION)
            ).all()
            trials = [(trial, project) for trial, project in rows]
            spans = {
                trial.id: (project, trial.started_at, trial.ended_at) for trial, project in trials
            }
            lost = sum(trial.state != TrialState.COMPLETED for trial, _ in trials)
    finally:
        store.close()
    reported = Counter((trial_id, step) for trial_id, step in steps)
    twice = {trial_id for (trial_id, _), count in reported.items() if count > 1}
    usage, window = _contended_usage(spans, list(shares))
    projects = [
        ProjectUsage(name=name, share=share, slot_seconds=usage.get(name, 0.0))
        for name, share in shares.items()
    ]
    return StoreReport(
        trials=len(trials),
        trials_lost=lost,
        trials_run_twice=len(twice & set(spans)),
        contended_window_s=window,
        projects=projects,
        jain_index=jain_index([p.slot_seconds / p.share for p in projects]),
    )


def _contended_usage(
    spans: dict[int, tuple[str, datetime | None, datetime | None]], projects: list[str]
) -> tuple[dict[str, float], float]:
    """Slot-seconds per project between the first trial's start and the moment the first
    project started its last trial (from then on it has nothing waiting)."""
    starts = [start for _, start, _ in spans.values() if start is not None]
    if not starts:
        return {}, 0.0
    last_start: dict[str, datetime] = {}
    for project, start, _ in spans.values():
        if start is not None and (project not in last_start or start > last_start[project]):
            last_start[project] = start
    begin = min(starts)
    end = min(last_start.get(p, begin) for p in projects)
    usage: dict[str, float] = defaultdict(float)
    for project, start, stop in spans.values():
        if start is None:
            continue
        clipped = (min(stop or end, end) - max(start, begin)).total_seconds()
        usage[project] += max(clipped, 0.0)
    return dict(usage), (end - begin).total_seconds()


def jain_index(values: list[float]) -> float:
    """(sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one takes everything."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares > 0 else 1.0
