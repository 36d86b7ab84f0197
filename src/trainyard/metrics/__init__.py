"""Evaluation metrics for jet-tagging classifiers."""

from trainyard.metrics.classification import (
    argmax_accuracy,
    predicted_classes,
    roc_curve,
    signal_metrics,
    softmax_signal_scores,
)

__all__ = [
    "argmax_accuracy",
    "predicted_classes",
    "roc_curve",
    "signal_metrics",
    "softmax_signal_scores",
]
