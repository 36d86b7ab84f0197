"""Evaluation metrics for jet-tagging classifiers."""

from trainyard.metrics.classification import binary_metrics, softmax_signal_scores

__all__ = ["binary_metrics", "softmax_signal_scores"]
