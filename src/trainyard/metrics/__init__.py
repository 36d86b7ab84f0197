"""Evaluation metrics for jet-tagging classifiers."""

from trainyard.metrics.classification import (
    ROC_POINTS,
    argmax_accuracy,
    background_rejection,
    downsampled_roc,
    predicted_classes,
    roc_auc,
    roc_curve,
    signal_metrics,
    softmax_signal_scores,
)
from trainyard.metrics.multiclass import (
    ClassLabels,
    class_metric_names,
    multiclass_metric_names,
    multiclass_metrics,
)
from trainyard.metrics.names import validation_metric_names

__all__ = [
    "ROC_POINTS",
    "ClassLabels",
    "argmax_accuracy",
    "background_rejection",
    "class_metric_names",
    "downsampled_roc",
    "multiclass_metric_names",
    "multiclass_metrics",
    "predicted_classes",
    "roc_auc",
    "roc_curve",
    "signal_metrics",
    "softmax_signal_scores",
    "validation_metric_names",
]
