"""Multi-class figures against scikit-learn on random data, their names, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from trainyard.metrics import (
    ClassLabels,
    class_metric_names,
    multiclass_metric_names,
    multiclass_metrics,
    validation_metric_names,
)
from trainyard.metrics.multiclass import REJECTION_EFFICIENCIES

JETCLASS_LABELS = (
    "label_QCD",
    "label_Hbb",
    "label_Hcc",
    "label_Hgg",
    "label_H4q",
    "label_Hqql",
    "label_Zqq",
    "label_Wqq",
    "label_Tbqq",
    "label_Tbl",
)


def _random_classifier(
    seed: int, num_jets: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, and log-probabilities / probabilities that favour the true class somewhat."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_jets)
    logits = rng.normal(size=(num_jets, num_classes))
    logits[np.arange(num_jets), labels] += rng.uniform(0.5, 2.5)
    log_probabilities = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return labels, log_probabilities, np.exp(log_probabilities)


def _sklearn_rejection(scores: np.ndarray, is_signal: np.ndarray, efficiency: float) -> float:
    """1/eps_B at eps_S = efficiency on scikit-learn's ROC points, interpolated linearly."""
    background_eff, signal_eff, _ = sklearn_roc_curve(is_signal, scores, drop_intermediate=False)
    above = int(np.argmax(signal_eff >= efficiency))
    below = above - 1
    fraction = (efficiency - signal_eff[below]) / (signal_eff[above] - signal_eff[below])
    eps_b = background_eff[below] + fraction * (background_eff[above] - background_eff[below])
    return math.inf if eps_b == 0 else 1 / eps_b


@pytest.mark.parametrize(("seed", "num_classes"), [(0, 3), (1, 5), (2, 10)])
def test_aucs_and_rejections_equal_scikit_learns(seed: int, num_classes: int) -> None:
    labels, log_probabilities, probabilities = _random_classifier(seed, 6_000, num_classes)
    classes = ClassLabels(labels=tuple(f"class_{i}" for i in range(num_classes)), background=0)
    metrics = multiclass_metrics(log_probabilities, labels, classes)

    assert metrics["auc_macro"] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"), rel=1e-12
    )
    for index in range(num_classes):
        expected = roc_auc_score(labels == index, probabilities[:, index])
        assert metrics[f"auc_class_{index}"] == pytest.approx(expected, rel=1e-12)
    background = labels == 0
    for index in range(1, num_classes):
        jets = (labels == index) | background
        # The paper's discriminant, literally: P(X) / (P(X) + P(QCD)).
        ratio = probabilities[jets, index] / (probabilities[jets, index] + probabilities[jets, 0])
        for prefix, efficiency in REJECTION_EFFICIENCIES.items():
            expected = _sklearn_rejection(ratio, labels[jets] == index, efficiency)
            assert metrics[f"{prefix}_class_{index}"] == pytest.approx(expected, rel=1e-9)
    assert list(metrics) == multiclass_metric_names(classes)
    assert all(type(value) is float for value in metrics.values())


def test_jetclass_names_and_count() -> None:
    classes = ClassLabels(labels=JETCLASS_LABELS, background=0)
    names = validation_metric_names(classes)
    assert len(names) == 4 * 10 + 3 == 43
    assert names[:7] == (
        "val_loss",
        "val_accuracy",
        "val_auc",
        "val_rej30",
        "val_rej50",
        "val_auc_macro",
        "val_auc_label_QCD",
    )
    # The entries of the ParT paper's JetClass table.
    assert {"val_rej50_label_Hbb", "val_rej99_label_Hqql", "val_rej995_label_Tbl"} <= set(names)
    assert "val_rej50_label_QCD" not in names, "the background gets no rejection"


def test_two_class_names_are_the_binary_ones() -> None:
    assert validation_metric_names(None) == (
        "val_loss",
        "val_accuracy",
        "val_auc",
        "val_rej30",
        "val_rej50",
    )


def test_without_a_background_there_are_no_rejections() -> None:
    labels, log_probabilities, _ = _random_classifier(3, 300, 3)
    classes = ClassLabels(labels=("a", "b", "c"), background=None)
    metrics = multiclass_metrics(log_probabilities, labels, classes)
    assert list(metrics) == ["auc_macro", "auc_a", "auc_b", "auc_c"]


def test_perfect_separation_from_the_background_rejects_everything() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.full((6, 3), 0.05)
    probabilities[np.arange(6), labels] = 0.9
    classes = ClassLabels(labels=("qcd", "top", "w"), background=0)
    metrics = multiclass_metrics(np.log(probabilities), labels, classes)
    assert metrics["auc_macro"] == 1.0
    assert metrics["rej995_top"] == metrics["rej50_w"] == math.inf


def test_far_tail_scores_do_not_tie() -> None:
    """P(X) / (P(X) + P(B)) rounds to 1.0 once P(B) < 1e-16 P(X); the log difference does not,
    so jets still order as their probabilities do."""
    labels = np.array([0] * 4 + [1] * 4 + [2])
    log_b = np.array([-1.0, -2.0, -40.0, -50.0, -45.0, -55.0, -60.0, -70.0, -1.0])
    log_probabilities = np.stack([log_b, np.zeros(9), np.full(9, -5.0)], axis=1)
    ratio = 1 / (1 + np.exp(log_b))
    assert np.all(ratio[2:8] == 1.0), "the literal ratio ties six jets of both classes"
    classes = ClassLabels(labels=("qcd", "x", "y"), background=0)
    metrics = multiclass_metrics(log_probabilities, labels, classes)
    # Scores log P(x) - log P(qcd): signals 45, 55, 60, 70; background 1, 2, 40, 50.
    # ROC points: (0, 0) (0, .25) (0, .5) (0, .75) (.25, .75) (.25, 1) (.5, 1) (.75, 1) (1, 1).
    assert metrics["rej50_x"] == math.inf  # eps_S = 0.5 at the cut 60, no background above
    assert metrics["rej99_x"] == pytest.approx(4.0)  # on (.25, .75)-(.25, 1): eps_B = 0.25


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (JETCLASS_LABELS[:3], ("label_QCD", "label_Hbb", "label_Hcc")),
        (("is_top", "label == 2", "(a & b)"), ("is_top", "label_2", "a_b")),
        (("x" * 60, "jet.pt > 5"), ("x" * 53, "jet_pt_5")),
    ],
)
def test_class_names_become_metric_safe(labels: tuple[str, ...], expected: tuple) -> None:
    names = class_metric_names(labels)
    assert names == expected
    assert all(len(f"val_rej995_{name}") <= 64 for name in names)


def test_classes_with_the_same_metric_name_are_an_error() -> None:
    with pytest.raises(ValueError) as caught:
        class_metric_names(("a > b", "a < b", "c", "=="))
    assert str(caught.value) == (
        "`labels.value` names the classes in metric names; '==' has no letter or digit; "
        "'a > b' and 'a < b' both become the metric name suffix 'a_b': give each class a "
        "distinct name (e.g. `new_variables: {is_wide: jet_mass > 100}`, then list `is_wide`)"
    )


def test_a_class_without_validation_jets_is_named() -> None:
    labels = np.array([0, 2, 0, 2])
    classes = ClassLabels(labels=("qcd", "top", "w"), background=0)
    with pytest.raises(ValueError) as caught:
        multiclass_metrics(np.log(np.full((4, 3), 1 / 3)), labels, classes)
    assert str(caught.value) == (
        "the validation set has no jets of class top (4 jets in all); the one-vs-rest AUC of "
        "a class needs jets of it, so give data.val jets of every class in labels.value"
    )


def test_bad_shapes_and_values_are_errors() -> None:
    classes = ClassLabels(labels=("qcd", "top", "w"), background=0)
    with pytest.raises(ValueError, match=r"shape \(N, 3\) and labels \(N,\), got \(2, 2\)"):
        multiclass_metrics(np.zeros((2, 2)), np.array([0, 1]), classes)
    with pytest.raises(ValueError, match="NaN or inf; the model output diverged"):
        multiclass_metrics(np.full((3, 3), np.nan), np.array([0, 1, 2]), classes)
    with pytest.raises(ValueError, match="labels must be class indices 0 to 2, got 5"):
        multiclass_metrics(np.zeros((3, 3)), np.array([0, 1, 5]), classes)
