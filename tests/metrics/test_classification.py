"""Accuracy, signal-vs-rest metrics: limiting classifiers, a hand-computed ROC, input errors."""

import itertools
import math

import numpy as np
import pytest
import torch

from trainyard.metrics import (
    argmax_accuracy,
    background_rejection,
    downsampled_roc,
    predicted_classes,
    roc_curve,
    signal_metrics,
    softmax_signal_scores,
)


def test_perfect_classifier() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    metrics = signal_metrics(scores, labels)
    assert metrics["auc"] == 1.0
    assert metrics["rej30"] == math.inf
    assert metrics["rej50"] == math.inf


def test_random_classifier() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200_000)
    scores = rng.random(200_000)
    metrics = signal_metrics(scores, labels)
    assert metrics["auc"] == pytest.approx(0.5, abs=0.01)
    # With no separation eps_B equals eps_S at every working point.
    assert metrics["rej30"] == pytest.approx(1 / 0.3, rel=0.03)
    assert metrics["rej50"] == pytest.approx(1 / 0.5, rel=0.03)


def test_hand_computed_roc() -> None:
    """Five signal and five background jets; two signals tie with a background at 0.5.

    ROC points (eps_B, eps_S) by falling threshold: (0.2, 0) (0.2, 0.2) (0.4, 0.2) (0.4, 0.4)
    (0.6, 0.8) (0.8, 0.8) (1, 0.8) (1, 1).
    eps_S = 0.3 is first reached at (0.4, 0.4), coming from (0.4, 0.2): eps_B = 0.4.
    eps_S = 0.5 lies on the tie segment (0.4, 0.4)-(0.6, 0.8): eps_B = 0.4 + 0.25 * 0.2 = 0.45.
    AUC counts signal-above-background pairs, ties as half: (4 + 3 + 2 * 2.5 + 0) / 25.
    """
    signal_scores = [0.8, 0.6, 0.5, 0.5, 0.1]
    background_scores = [0.9, 0.7, 0.5, 0.3, 0.2]
    scores = np.array(signal_scores + background_scores)
    labels = np.array([1] * 5 + [0] * 5)
    metrics = signal_metrics(scores, labels)
    assert metrics["auc"] == pytest.approx(12 / 25)
    assert metrics["rej30"] == pytest.approx(1 / 0.4)
    assert metrics["rej50"] == pytest.approx(1 / 0.45)


def test_values_are_plain_floats() -> None:
    metrics = signal_metrics(np.array([0.2, 0.9, 0.4]), np.array([0, 1, 1]))
    assert sorted(metrics) == ["auc", "rej30", "rej50"]
    assert all(type(value) is float for value in metrics.values())


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_is_an_error(label: int) -> None:
    with pytest.raises(
        ValueError,
        match=rf"signal metrics need both signal \(1\) and background \(0\).*\[{label}\]",
    ):
        signal_metrics(np.array([0.1, 0.9]), np.array([label, label]))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\), got scores \(3,\) and labels \(2,\)"):
        signal_metrics(np.array([0.1, 0.5, 0.9]), np.array([0, 1]))


def test_two_column_scores_point_to_softmax_signal_scores() -> None:
    with pytest.raises(ValueError, match="softmax_signal_scores"):
        signal_metrics(np.zeros((4, 2)), np.array([0, 1, 0, 1]))


def test_labels_other_than_zero_and_one_are_an_error() -> None:
    with pytest.raises(ValueError, match="labels must be 0"):
        signal_metrics(np.array([0.1, 0.9]), np.array([0, 2]))


def test_non_finite_scores_are_an_error() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        signal_metrics(np.array([0.1, np.nan]), np.array([0, 1]))


def test_softmax_signal_scores() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    scores = softmax_signal_scores(logits.requires_grad_())
    assert isinstance(scores, np.ndarray)
    np.testing.assert_allclose(scores, [0.5, 0.75])


def test_softmax_signal_scores_takes_class_one_of_many() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    np.testing.assert_allclose(softmax_signal_scores(logits), [0.5], rtol=1e-6)


def test_softmax_signal_scores_of_another_signal_class() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    np.testing.assert_allclose(softmax_signal_scores(logits, signal_class=0), [0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="signal class 3 is not one of the 3 classes"):
        softmax_signal_scores(logits, signal_class=3)


def test_softmax_signal_scores_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        softmax_signal_scores(torch.zeros(3, 1))


# Three classes, class 0 the signal. Per jet: label, then softmax probabilities of 0, 1, 2.
THREE_CLASS_JETS = [
    (0, (0.60, 0.30, 0.10)),  # argmax right; p0 > 0.5: right as signal vs rest
    (1, (0.10, 0.20, 0.70)),  # argmax wrong (2); p0 < 0.5: right as "rest"
    (2, (0.20, 0.50, 0.30)),  # argmax wrong (1); p0 < 0.5: right as "rest"
    (1, (0.10, 0.80, 0.10)),  # both right
    (2, (0.46, 0.04, 0.50)),  # both right
    (0, (0.45, 0.35, 0.20)),  # argmax right; p0 < 0.5: wrong as signal vs rest
]
THREE_CLASS_ARGMAX_ACCURACY = 4 / 6
THREE_CLASS_SIGNAL_VS_REST_ACCURACY = 5 / 6
# Signals score 0.60 and 0.45, the rest 0.10, 0.20, 0.10, 0.46: 7 of 8 pairs ordered right.
THREE_CLASS_AUC = 7 / 8


def three_class_logits() -> tuple[torch.Tensor, np.ndarray]:
    """(N, 3) logits whose softmax is THREE_CLASS_JETS' probabilities, and the labels."""
    probabilities = torch.tensor([p for _, p in THREE_CLASS_JETS], dtype=torch.float64)
    return probabilities.log(), np.array([label for label, _ in THREE_CLASS_JETS])


def test_accuracy_of_three_classes_is_argmax_accuracy() -> None:
    logits, labels = three_class_logits()
    predicted = predicted_classes(logits)
    assert predicted.tolist() == [0, 2, 1, 1, 2, 0]
    accuracy = argmax_accuracy(predicted, labels)
    assert accuracy == pytest.approx(THREE_CLASS_ARGMAX_ACCURACY)
    assert accuracy != pytest.approx(THREE_CLASS_SIGNAL_VS_REST_ACCURACY)


def test_signal_metrics_of_three_classes_are_signal_vs_rest() -> None:
    logits, labels = three_class_logits()
    scores = softmax_signal_scores(logits, signal_class=0)
    np.testing.assert_allclose(scores, [0.60, 0.10, 0.20, 0.10, 0.46, 0.45])
    metrics = signal_metrics(scores, (labels == 0).astype(np.int64))
    assert metrics["auc"] == pytest.approx(THREE_CLASS_AUC)


def test_two_class_argmax_accuracy_is_the_cut_at_one_half() -> None:
    """The accuracy reported before argmax (signal probability > 0.5) is unchanged."""
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(1000, 2)))
    labels = rng.integers(0, 2, size=1000)
    for signal_class in (0, 1):
        scores = softmax_signal_scores(logits, signal_class=signal_class)
        cut = np.mean((scores > 0.5) == (labels == signal_class))
        assert argmax_accuracy(predicted_classes(logits), labels) == pytest.approx(cut)


def test_accuracy_of_a_random_classifier() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200_000)
    predicted = rng.integers(0, 3, size=200_000)
    assert argmax_accuracy(predicted, labels) == pytest.approx(1 / 3, abs=0.01)


def test_accuracy_needs_class_indices_of_equal_length() -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\) with N > 0, got predicted \(2, 3\)"):
        argmax_accuracy(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        predicted_classes(torch.zeros(3, 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_and_auc_equal_scikit_learns(seed: int) -> None:
    """Our numpy ROC (which spares the worker importing sklearn) against sklearn's, with ties."""
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=5_000)
    scores = np.round(rng.random(5_000) + 0.3 * labels, 2)  # rounding makes many ties
    background_eff, signal_eff = roc_curve(scores, labels)
    expected_b, expected_s, _ = sklearn_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(background_eff, expected_b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(signal_eff, expected_s, rtol=0, atol=1e-12)
    assert signal_metrics(scores, labels)["auc"] == pytest.approx(
        roc_auc_score(labels, scores), rel=1e-12
    )


def test_downsampled_roc_keeps_the_rejections_and_reads_the_curve_between_its_points() -> None:
    rng = np.random.default_rng(3)
    is_signal = rng.integers(0, 2, 5000)
    scores = rng.normal(is_signal * 1.5, 1.0)
    background_eff, signal_eff = roc_curve(scores, is_signal)
    grid, background = downsampled_roc(signal_eff, background_eff)
    assert len(grid) == len(background) == 200 and grid[59] == 0.3 and grid[99] == 0.5
    assert grid[-1] == 1.0 and 0 < background[-1] <= 1.0
    assert all(a <= b for a, b in itertools.pairwise(background))  # a ROC curve rises
    for target in (0.3, 0.5):  # the working points, exactly as the full curve has them
        full = background_rejection(signal_eff, background_eff, target)
        assert background_rejection(np.array(grid), np.array(background), target) == full
    for i in (17, 120, 199):  # every point is read off the full curve as rejections are
        full = background_rejection(signal_eff, background_eff, grid[i])
        assert 1 / background[i] == pytest.approx(full, rel=1e-12)


def test_downsampled_roc_needs_points_that_hold_the_working_points() -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        downsampled_roc(np.array([0.0, 1.0]), np.array([0.0, 1.0]), points=64)
