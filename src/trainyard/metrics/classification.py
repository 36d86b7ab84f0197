"""Binary classification metrics in the conventions of the top-tagging benchmark.

Background rejection 1/eps_B at a fixed signal efficiency eps_S follows arXiv:1902.09914:
eps_B is read off the ROC curve, linearly interpolated between its points, so numbers are
comparable with the published tables.
"""

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

_REJECTION_WORKING_POINTS = {"rej30": 0.3, "rej50": 0.5}


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (score > 0.5), ROC AUC and background rejection at 30% and 50% signal eff.

    scores is the signal probability per jet (N,), labels 1 for signal and 0 for background.
    A rejection is inf when no background passes at that working point.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = _binary_labels(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must both have shape (N,), got scores {scores.shape} and "
            f"labels {labels.shape}; for (N, classes) logits use softmax_signal_scores first"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf; the model output diverged")
    present = np.unique(labels)
    if present.size != 2:
        raise ValueError(
            f"binary metrics need both signal (1) and background (0) jets, but the labels "
            f"contain only {present.tolist()} ({labels.size} jets)"
        )
    metrics = {
        "accuracy": float(np.mean((scores > 0.5) == labels)),
        "auc": float(roc_auc_score(labels, scores)),
    }
    background_eff, signal_eff, _ = roc_curve(labels, scores, drop_intermediate=False)
    for key, target in _REJECTION_WORKING_POINTS.items():
        background = _background_efficiency_at(signal_eff, background_eff, target)
        metrics[key] = float("inf") if background == 0 else 1.0 / background
    return metrics


def softmax_signal_scores(logits: torch.Tensor, *, signal_class: int = 1) -> np.ndarray:
    """Probability of class ``signal_class`` from (N, classes) logits, as float64 numpy."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape (N, classes) with at least 2 classes, "
            f"got {tuple(logits.shape)}"
        )
    if not 0 <= signal_class < logits.shape[1]:
        raise ValueError(
            f"signal class {signal_class} is not one of the {logits.shape[1]} classes of the "
            "logits; choose data.signal_class between 0 and the number of classes - 1"
        )
    probabilities = torch.softmax(logits.detach().to(torch.float64), dim=1)
    return probabilities[:, signal_class].cpu().numpy()


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels must be 0 (background) or 1 (signal), got {np.unique(labels)}")
    return labels.astype(np.int64)


def _background_efficiency_at(
    signal_eff: np.ndarray, background_eff: np.ndarray, target: float
) -> float:
    """eps_B where the ROC curve reaches eps_S = target, interpolating linearly.

    The ROC points go from (0, 0) to (1, 1) with eps_S non-decreasing. Where eps_S stays at
    the target over a range of eps_B, the smallest eps_B (the best cut) is taken.
    """
    above = int(np.searchsorted(signal_eff, target, side="left"))
    if signal_eff[above] == target:
        return float(background_eff[above])
    below = above - 1
    fraction = (target - signal_eff[below]) / (signal_eff[above] - signal_eff[below])
    step = background_eff[above] - background_eff[below]
    return float(background_eff[below] + fraction * step)
