"""The names of the metrics a validation reports, known before any trial runs.

Preflight checks the searcher's metric against them, and the worker's validation reports
exactly these (a test holds the two together), so a misspelt or unavailable metric fails
before anything is queued instead of leaving a search with no values.
"""

from __future__ import annotations

from trainyard.metrics.classification import SIGNAL_METRICS
from trainyard.metrics.multiclass import ClassLabels, multiclass_metric_names

VALIDATION_PREFIX = "val_"


def validation_metric_names(classes: ClassLabels | None) -> tuple[str, ...]:
    """Every metric of a validation, in the order the worker reports them: val_loss,
    val_accuracy, the signal class's val_auc, val_rej30 and val_rej50, then, with more than
    two classes (``classes`` given), the multi-class figures of ``multiclass_metrics``."""
    names = ["loss", "accuracy", *SIGNAL_METRICS]
    if classes is not None:
        names += multiclass_metric_names(classes)
    return tuple(f"{VALIDATION_PREFIX}{name}" for name in names)
