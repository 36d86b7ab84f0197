"""Classification metrics in the conventions of the top-tagging benchmark.

Accuracy is argmax accuracy over all classes. ROC AUC and background rejection are figures of
one signal class against all other classes together ("the rest"), scored by the signal class's
softmax probability; with two classes that is the usual signal-vs-background picture, with more
it is one-vs-rest for the signal class only, and says nothing about how the other classes are
told apart from each other.

Background rejection 1/eps_B at a fixed signal efficiency eps_S follows arXiv:1902.09914:
eps_B is read off the ROC curve, linearly interpolated between its points, so numbers are
comparable with the published tables.

The ROC curve is computed here with numpy (the same points as scikit-learn's
``roc_curve(drop_intermediate=False)``, which the tests check) rather than imported from
scikit-learn: importing sklearn.metrics pulls in scipy and took 1-4 s of every worker's start.
"""

import numpy as np
import torch

_REJECTION_WORKING_POINTS = {"rej30": 0.3, "rej50": 0.5}
SIGNAL_METRICS = ("auc", *_REJECTION_WORKING_POINTS)
"""The keys of ``signal_metrics``, in its order."""


def argmax_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of jets whose most probable class (``predicted_classes``) is their label.

    Holds for any number of classes. With two classes it equals the signal-vs-background
    accuracy of a cut at 0.5 on the signal probability, except for jets whose two logits are
    exactly equal (argmax then picks class 0).
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.ndim != 1 or predicted.shape != labels.shape or not labels.size:
        raise ValueError(
            f"predicted classes and labels must both have shape (N,) with N > 0, got "
            f"predicted {predicted.shape} and labels {labels.shape}; for (N, classes) logits "
            "use predicted_classes first"
        )
    return float(np.mean(predicted == labels))


def signal_metrics(scores: np.ndarray, is_signal: np.ndarray) -> dict[str, float]:
    """ROC AUC and background rejection at 30% and 50% signal efficiency (auc, rej30, rej50).

    scores is the signal class's probability per jet (N,) (``softmax_signal_scores``), and
    is_signal is 1 for jets of the signal class and 0 for jets of every other class: with more
    than two classes all the others together are the background. A rejection is inf when no
    background passes at that working point.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_signal = _binary_labels(is_signal)
    if scores.ndim != 1 or scores.shape != is_signal.shape:
        raise ValueError(
            f"scores and labels must both have shape (N,), got scores {scores.shape} and "
            f"labels {is_signal.shape}; for (N, classes) logits use softmax_signal_scores first"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf; the model output diverged")
    present = np.unique(is_signal)
    if present.size != 2:
        raise ValueError(
            f"signal metrics need both signal (1) and background (0) jets, but the labels "
            f"contain only {present.tolist()} ({is_signal.size} jets)"
        )
    background_eff, signal_eff = roc_curve(scores, is_signal)
    metrics = {"auc": float(np.trapezoid(signal_eff, background_eff))}
    for key, target in _REJECTION_WORKING_POINTS.items():
        metrics[key] = background_rejection(signal_eff, background_eff, target)
    return metrics


def roc_auc(scores: np.ndarray, is_signal: np.ndarray) -> float:
    """Area under the ROC curve of ``roc_curve``; both classes must have jets."""
    background_eff, signal_eff = roc_curve(scores, is_signal)
    return float(np.trapezoid(signal_eff, background_eff))


def background_rejection(
    signal_eff: np.ndarray, background_eff: np.ndarray, target: float
) -> float:
    """1/eps_B where the ROC curve of ``roc_curve`` reaches eps_S = target; inf when no
    background passes there."""
    background = _background_efficiency_at(signal_eff, background_eff, target)
    return float("inf") if background == 0 else 1.0 / background


def roc_curve(scores: np.ndarray, is_signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eps_B, eps_S) of every cut "score >= t", t running down the distinct scores, from
    (0, 0) to (1, 1). Jets with equal scores pass or fail together, so ties give one point."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores, sorted_signal = scores[order], is_signal[order]
    # The last jet of each run of equal scores: where a cut can fall.
    cut_ends = np.flatnonzero(np.diff(sorted_scores)) if sorted_scores.size > 1 else []
    cut_ends = np.append(cut_ends, sorted_scores.size - 1)
    signal_passed = np.cumsum(sorted_signal)[cut_ends]
    background_passed = cut_ends + 1 - signal_passed
    signal_eff = np.concatenate([[0.0], signal_passed / signal_passed[-1]])
    background_eff = np.concatenate([[0.0], background_passed / background_passed[-1]])
    return background_eff, signal_eff


ROC_POINTS = 200
"""Points of a stored ROC curve: eps_S = 1/200, 2/200, ... 1, which holds 0.3 and 0.5 exactly."""


def downsampled_roc(
    signal_eff: np.ndarray, background_eff: np.ndarray, points: int = ROC_POINTS
) -> tuple[list[float], list[float]]:
    """(eps_S, eps_B) of a ``roc_curve`` at ``points`` signal efficiencies evenly spaced up
    to 1, eps_B read as ``background_rejection`` reads it (linear interpolation, the best cut
    where eps_S is flat). The full curve has a point per distinct score (a million on a big
    validation set); this one is small enough to store with every validation, and its
    rejections at 30% and 50% equal the full curve's because both lie on the grid."""
    if points < 2 or points % 10:
        raise ValueError(
            f"points must be a positive multiple of 10 (to hold 0.3 and 0.5), got {points}"
        )
    grid = np.arange(1, points + 1) / points
    signal_eff, background_eff = np.asarray(signal_eff), np.asarray(background_eff)
    above = np.searchsorted(signal_eff, grid, side="left")
    below = np.maximum(above - 1, 0)
    span = signal_eff[above] - signal_eff[below]
    fraction = np.divide(grid - signal_eff[below], span, out=np.zeros_like(grid), where=span > 0)
    step = background_eff[above] - background_eff[below]
    interpolated = background_eff[below] + fraction * step
    exact = signal_eff[above] == grid
    background = np.where(exact, background_eff[above], interpolated)
    return grid.tolist(), background.tolist()


def softmax_signal_scores(logits: torch.Tensor, *, signal_class: int = 1) -> np.ndarray:
    """Probability of class ``signal_class`` from (N, classes) logits, as float64 numpy."""
    _check_logits(logits)
    if not 0 <= signal_class < logits.shape[1]:
        raise ValueError(
            f"signal class {signal_class} is not one of the {logits.shape[1]} classes of the "
            "logits; choose data.signal_class between 0 and the number of classes - 1"
        )
    probabilities = torch.softmax(logits.detach().to(torch.float64), dim=1)
    return probabilities[:, signal_class].cpu().numpy()


def predicted_classes(logits: torch.Tensor) -> np.ndarray:
    """The most probable class per jet (N,) from (N, classes) logits, as int64 numpy."""
    _check_logits(logits)
    return logits.detach().argmax(dim=1).cpu().numpy()


def _check_logits(logits: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape (N, classes) with at least 2 classes, "
            f"got {tuple(logits.shape)}"
        )


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
