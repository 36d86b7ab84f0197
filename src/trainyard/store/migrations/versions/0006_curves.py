"""Validation curves: each trial's curve of each validation metric, thinned, one row per
(trial, metric), kept current as reports arrive; built here from the reports already stored.

Revision ID: 0006_curves
Revises: 0005_roc
Create Date: 2026-12-01
"""

from collections import defaultdict
from collections.abc import Iterator, Sequence
from itertools import groupby

import sqlalchemy as sa
from alembic import op

# The thinning itself, not a copy: the rows must be what folding the reports on arrival gives.
# It is pure (no models), so this migration does not change when the models do.
from trainyard.store.curve_thinning import ThinnedCurve

revision: str = "0006_curves"
down_revision: str | Sequence[str] | None = "0005_roc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_METRICS = sa.table(
    "ty_metrics",
    sa.column("id", sa.Integer),
    sa.column("trial_id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("batches", sa.Integer),
    sa.column("values", sa.JSON),
)
_BATCH = 1000


def upgrade() -> None:
    curves = op.create_table(
        "ty_validation_curves",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("stride", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("values", sa.Text(), nullable=False),
        sa.Column("max_value", sa.Double(), nullable=True),
        sa.Column("max_step", sa.Integer(), nullable=True),
        sa.Column("min_value", sa.Double(), nullable=True),
        sa.Column("min_step", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("trial_id", "metric", name="pk_ty_validation_curves"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["ty_trials.id"],
            name="fk_ty_validation_curves_trial_id_ty_trials",
            ondelete="CASCADE",
        ),
    )
    rows: list[dict[str, object]] = []
    for row in _curve_rows():
        rows.append(row)
        if len(rows) == _BATCH:
            op.bulk_insert(curves, rows)
            rows = []
    if rows:
        op.bulk_insert(curves, rows)


def downgrade() -> None:
    op.drop_table("ty_validation_curves")


def _curve_rows() -> Iterator[dict[str, object]]:
    """A row per (trial, metric) of the validation reports stored, trial by trial."""
    query = (
        sa.select(_METRICS.c.trial_id, _METRICS.c.batches, _METRICS.c["values"])
        .where(_METRICS.c.kind == "validation")
        .order_by(_METRICS.c.trial_id, _METRICS.c.id)
    )
    reports = op.get_bind().execute(query.execution_options(yield_per=_BATCH))
    for trial_id, trial_reports in groupby(reports, key=lambda report: report[0]):
        points: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for _, batches, values in trial_reports:
            for metric, value in values.items():
                points[metric].append((batches, float(value)))
        for metric, metric_points in points.items():
            curve = ThinnedCurve.from_points(metric_points)
            yield {
                "trial_id": trial_id,
                "metric": metric,
                "stride": curve.stride,
                "count": curve.count,
                "steps": curve.steps_json(),
                "values": curve.values_json(),
                "max_value": curve.max_value,
                "max_step": curve.max_step,
                "min_value": curve.min_value,
                "min_step": curve.min_step,
            }
