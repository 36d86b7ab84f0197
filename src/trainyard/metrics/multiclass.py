"""Figures of a classifier with more than two classes, as the ParT paper reports them for
JetClass (arXiv:2202.03772, Table 2): one-vs-rest ROC AUC of every class and their macro
average, and each signal class's background rejection against one background class.

The rejection of class X scores a jet by P(X) / (P(X) + P(B)), B the background class, over
the jets of X and B only (the paper's discriminant). That ratio is a monotonic function of
log P(X) - log P(B), so the ROC curve is computed from the difference of log-probabilities:
the same curve, without the ties that the ratio's rounding to 1.0 makes in the far tail where
Rej99.5% is read. The paper reads most classes at 50% signal efficiency and the two that are
easiest to tell from QCD at 99% (H -> l nu q q') and 99.5% (t -> b l nu); every signal class
reports all three, so each entry of the table has its metric whatever the class is called.

Metric names end in the class's name from the data config's ``labels.value``, made safe for a
metric name (``class_metric_names``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from trainyard.metrics.classification import background_rejection, roc_auc, roc_curve

REJECTION_EFFICIENCIES = {"rej50": 0.5, "rej99": 0.99, "rej995": 0.995}
"""Signal efficiencies of the per-class background rejections, by metric-name prefix."""
MAX_CLASS_NAME = 64 - len("val_rej995_")
"""A metric name has at most 64 characters (the protocol's MetricName)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class ClassLabels:
    """The classes as the multi-class metrics name them, and the background of the rejections."""

    labels: tuple[str, ...]
    """The data config's ``labels.value`` entries, as written."""
    background: int | None
    """Index of the background class; None reports no rejections."""

    @cached_property
    def names(self) -> tuple[str, ...]:
        """One metric-safe name per class, in label order (``class_metric_names``)."""
        return class_metric_names(self.labels)

    @property
    def signals(self) -> list[int]:
        """The classes that get a rejection: all but the background (none without one)."""
        if self.background is None:
            return []
        return [index for index in range(len(self.names)) if index != self.background]


def class_metric_names(labels: Sequence[str]) -> tuple[str, ...]:
    """``labels.value`` entries as metric-name suffixes: each run of characters other than
    letters, digits and ``_`` becomes one ``_`` (``label == 2`` -> ``label_2``), leading and
    trailing ``_`` go, and names are cut to ``MAX_CLASS_NAME`` characters. Case is kept, so
    a name reads as it does in the data config. Raises ValueError naming the entries when
    two classes end up with the same name, or one with none."""
    names = [_UNSAFE.sub("_", label).strip("_")[:MAX_CLASS_NAME] for label in labels]
    problems = [
        f"{label!r} has no letter or digit"
        for label, n in zip(labels, names, strict=True)
        if not n
    ]
    for name in dict.fromkeys(names):
        same = [label for label, n in zip(labels, names, strict=True) if n == name]
        if name and len(same) > 1:
            listed = " and ".join(repr(label) for label in same)
            problems.append(f"{listed} both become the metric name suffix {name!r}")
    if problems:
        raise ValueError(
            f"`labels.value` names the classes in metric names; {'; '.join(problems)}: give "
            "each class a distinct name (e.g. `new_variables: {is_wide: jet_mass > 100}`, "
            "then list `is_wide`)"
        )
    return tuple(names)


def multiclass_metric_names(classes: ClassLabels) -> list[str]:
    """The keys ``multiclass_metrics`` returns for these classes, in its order."""
    names = ["auc_macro", *(f"auc_{name}" for name in classes.names)]
    for prefix in REJECTION_EFFICIENCIES:
        names += [f"{prefix}_{classes.names[index]}" for index in classes.signals]
    return names


def multiclass_metrics(
    log_probabilities: np.ndarray, labels: np.ndarray, classes: ClassLabels
) -> dict[str, float]:
    """auc_macro, auc_<class> of every class, and rej50_, rej99_, rej995_<class> of every
    class but the background.

    log_probabilities is (N, classes), the log-softmax of the logits; labels (N,) the class
    indices. auc_<class> scores each class by its own probability against all other jets
    (scikit-learn's one-vs-rest); auc_macro is their unweighted mean. A rejection is inf when
    no background jet passes at that working point. Every class needs validation jets.
    """
    log_probabilities = np.asarray(log_probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    _check_inputs(log_probabilities, labels, classes)
    aucs = {
        f"auc_{name}": roc_auc(log_probabilities[:, index], labels == index)
        for index, name in enumerate(classes.names)
    }
    metrics = {"auc_macro": float(np.mean(list(aucs.values()))), **aucs}
    curves = {
        index: _ratio_roc(log_probabilities, labels, index, classes) for index in classes.signals
    }
    for prefix, efficiency in REJECTION_EFFICIENCIES.items():
        for index, (background_eff, signal_eff) in curves.items():
            name = f"{prefix}_{classes.names[index]}"
            metrics[name] = background_rejection(signal_eff, background_eff, efficiency)
    return metrics


def _ratio_roc(
    log_probabilities: np.ndarray, labels: np.ndarray, signal: int, classes: ClassLabels
) -> tuple[np.ndarray, np.ndarray]:
    """(eps_B, eps_S) of class ``signal`` against the background class, over their jets only,
    scored by log P(signal) - log P(background) (see the module doc)."""
    background = classes.background
    assert background is not None, "only classes.signals get a rejection"
    jets = (labels == signal) | (labels == background)
    scores = log_probabilities[jets, signal] - log_probabilities[jets, background]
    return roc_curve(scores, (labels[jets] == signal).astype(np.int64))


def _check_inputs(log_probabilities: np.ndarray, labels: np.ndarray, classes: ClassLabels) -> None:
    num_classes = len(classes.names)
    if log_probabilities.shape != (labels.size, num_classes) or labels.ndim != 1:
        raise ValueError(
            f"log-probabilities must have shape (N, {num_classes}) and labels (N,), got "
            f"{log_probabilities.shape} and {labels.shape}"
        )
    if not np.all(np.isfinite(log_probabilities)):
        raise ValueError("log-probabilities contain NaN or inf; the model output diverged")
    counts = np.bincount(labels, minlength=num_classes) if labels.size else np.zeros(num_classes)
    if counts.size > num_classes:
        raise ValueError(
            f"labels must be class indices 0 to {num_classes - 1}, got {labels.max()}"
        )
    empty = [name for name, count in zip(classes.names, counts, strict=True) if count == 0]
    if empty:
        raise ValueError(
            f"the validation set has no jets of class {', '.join(empty)} "
            f"({labels.size} jets in all); the one-vs-rest AUC of a class needs jets of it, so "
            "give data.val jets of every class in labels.value"
        )
