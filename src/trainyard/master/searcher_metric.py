"""Preflight's check of the searcher's metric: it must be one that the experiment's data make
every validation report (``trainyard.metrics.validation_metric_names``), so a misspelt name,
or a multi-class metric the data cannot give, fails before anything is queued instead of
leaving a search without values.
"""

from __future__ import annotations

from trainyard.data.classes import background_candidates
from trainyard.data.model_inputs import ModelInputs
from trainyard.metrics import validation_metric_names
from trainyard.metrics.multiclass import REJECTION_EFFICIENCIES
from trainyard.protocol import MAX_METRICS_PER_REPORT
from trainyard.suggest import did_you_mean

_REJECTIONS = tuple(f"val_{prefix}_" for prefix in REJECTION_EFFICIENCIES)
_PER_CLASS = ("val_auc_", *_REJECTIONS)


def metric_problems(metric: str, inputs: ModelInputs) -> list[str]:
    """``searcher.metric`` must be reported by these inputs' validations, and a validation's
    metrics must fit in one report."""
    names = validation_metric_names(inputs.classes)
    problems = []
    if len(names) > MAX_METRICS_PER_REPORT:
        problems.append(
            f"`data.config`: its {inputs.num_classes} classes make {len(names)} validation "
            f"metrics, more than the {MAX_METRICS_PER_REPORT} one report may hold; merge "
            "classes in `labels.value`"
        )
    if metric not in names:
        # A metric these data cannot give is explained, not matched to a near name.
        hint = _why_not_reported(metric, inputs) or did_you_mean(metric, names)
        problems.append(
            f"`searcher.metric`: no trial reports {metric!r}; {hint}this experiment's "
            f"validations report {', '.join(names)}"
        )
    return problems


def _why_not_reported(metric: str, inputs: ModelInputs) -> str:
    """Why a per-class metric is missing: two classes, no background class, or the metric is
    the background's own rejection; "" when none of these is the reason."""
    classes = inputs.classes
    if not metric.startswith(_PER_CLASS):
        return ""
    if classes is None:
        return (
            f"the per-class metrics are reported only with more than two classes, and the "
            f"data has {inputs.num_classes}; "
        )
    if not metric.startswith(_REJECTIONS):
        return ""
    if classes.background is not None:
        if not metric.endswith(f"_{classes.names[classes.background]}"):
            return ""
        return (
            f"{classes.labels[classes.background]} is the background class, which the "
            "rejections of the other classes are measured against; "
        )
    found = background_candidates(classes.labels)
    named = f"several are ({', '.join(found)})" if found else "none is"
    return (
        f"the per-class rejections are measured against a background class, but no "
        f"`data.background_class` is set and of `labels.value` {named} named like QCD; set "
        "it to the background's name or index; "
    )
