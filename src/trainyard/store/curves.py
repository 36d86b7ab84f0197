"""Each trial's validation curves, thinned and stored as the reports arrive
(``ty_validation_curves``, see `curve_thinning`): written in the transaction that stores the
report, read by the dashboard a row per trial."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.protocol import MetricKind
from trainyard.store.curve_thinning import ThinnedCurve
from trainyard.store.models import Metric, Trial, ValidationCurve


@dataclass(frozen=True)
class StoredCurve:
    """A trial's curve of one metric as the page uses it: the best value and its step (None
    when it has no finite point) and the points as JSON arrays."""

    best: float | None
    best_step: int | None
    steps_json: str
    values_json: str


def fold_validation(
    session: Session, *, trial_id: int, batches: int, values: Mapping[str, float]
) -> None:
    """Fold a validation report just added into the trial's curves: appended when it is past
    each curve's newest step, else (a step validated again) every curve of the trial built
    again from its reports. Rows are locked, so two reports of a trial fold one at a time."""
    query = select(ValidationCurve).where(ValidationCurve.trial_id == trial_id)
    rows = {row.metric: row for row in session.scalars(query.with_for_update())}
    for metric, value in values.items():
        row = rows.get(metric)
        curve = _curve(row) if row else ThinnedCurve()
        if not curve.add(batches, value):
            rebuild_trial_curves(session, trial_id=trial_id)
            return
        _write(session, row or ValidationCurve(trial_id=trial_id, metric=metric), curve)
    session.flush()


def rebuild_trial_curves(session: Session, *, trial_id: int) -> None:
    """Every curve of the trial, built again from all its validation reports."""
    query = (
        select(Metric.batches, Metric.values)
        .where(Metric.trial_id == trial_id, Metric.kind == MetricKind.VALIDATION)
        .order_by(Metric.id)
    )
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for batches, values in session.execute(query):
        for metric, value in values.items():
            points[metric].append((batches, value))
    query = select(ValidationCurve).where(ValidationCurve.trial_id == trial_id)
    rows = {row.metric: row for row in session.scalars(query.with_for_update())}
    for metric, reports in points.items():
        row = rows.get(metric) or ValidationCurve(trial_id=trial_id, metric=metric)
        _write(session, row, ThinnedCurve.from_points(reports))
    session.flush()


def experiment_curves(
    session: Session, *, experiment_id: int, metric: str, mode: str, with_points: bool = True
) -> dict[int, StoredCurve]:
    """Trial id -> its curve of validation `metric`, for the experiment's trials that report
    it; `mode` (max or min) picks the best value; without `with_points` the JSON arrays are
    left unread (empty), for a table that shows only the best values."""
    best_value, best_step = (
        (ValidationCurve.max_value, ValidationCurve.max_step)
        if mode == "max"
        else (ValidationCurve.min_value, ValidationCurve.min_step)
    )
    columns = [ValidationCurve.trial_id, best_value, best_step]
    if with_points:
        columns += [ValidationCurve.steps, ValidationCurve.values]
    query = (
        select(*columns)
        .join(Trial, Trial.id == ValidationCurve.trial_id)
        .where(Trial.experiment_id == experiment_id, ValidationCurve.metric == metric)
    )
    found = {}
    for row in session.execute(query):
        steps, values = (row[3], row[4]) if with_points else ("[]", "[]")
        found[row[0]] = StoredCurve(
            best=row[1], best_step=row[2], steps_json=steps, values_json=values
        )
    return found


def experiment_curve_metrics(session: Session, *, experiment_id: int) -> list[str]:
    """The validation metrics any of the experiment's trials reported, by name."""
    query = (
        select(ValidationCurve.metric)
        .join(Trial, Trial.id == ValidationCurve.trial_id)
        .where(Trial.experiment_id == experiment_id)
        .distinct()
        .order_by(ValidationCurve.metric)
    )
    return list(session.scalars(query))


def _curve(row: ValidationCurve) -> ThinnedCurve:
    return ThinnedCurve(
        steps=json.loads(row.steps),
        values=json.loads(row.values),
        stride=row.stride,
        count=row.count,
        max_value=row.max_value,
        max_step=row.max_step,
        min_value=row.min_value,
        min_step=row.min_step,
    )


def _write(session: Session, row: ValidationCurve, curve: ThinnedCurve) -> None:
    """The curve into its row, which is added to the session when new."""
    session.add(row)
    row.steps, row.values = curve.steps_json(), curve.values_json()
    row.stride, row.count = curve.stride, curve.count
    row.max_value, row.max_step = curve.max_value, curve.max_step
    row.min_value, row.min_step = curve.min_value, curve.min_step
