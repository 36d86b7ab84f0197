"""Reading and writing validation ROC curves (``ty_validation_rocs``), apart from the other
metrics so that bulk metric reads never touch them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.protocol import MetricKind, RocCurve
from trainyard.store.models import Metric, ValidationRoc


def add_validation_roc(session: Session, *, metric_id: int, roc: RocCurve) -> None:
    """Store the ROC curve sent with the validation report `metric_id`."""
    session.add(
        ValidationRoc(
            metric_id=metric_id,
            signal_efficiency=list(roc.signal_efficiency),
            background_efficiency=list(roc.background_efficiency),
        )
    )
    session.flush()


def validation_roc(session: Session, *, trial_id: int, batches: int) -> RocCurve | None:
    """The ROC curve of the trial's validation at step `batches` (the newest report there
    that has one), or None when that validation came without one."""
    query = (
        select(ValidationRoc.signal_efficiency, ValidationRoc.background_efficiency)
        .join(Metric, Metric.id == ValidationRoc.metric_id)
        .where(
            Metric.trial_id == trial_id,
            Metric.kind == MetricKind.VALIDATION,
            Metric.batches == batches,
        )
        .order_by(Metric.id.desc())
        .limit(1)
    )
    found = session.execute(query).first()
    if found is None:
        return None
    return RocCurve(signal_efficiency=found[0], background_efficiency=found[1])
