"""Binary metrics: limiting classifiers, a hand-computed ROC, and input errors."""

import math

import numpy as np
import pytest
import torch

from trainyard.metrics import binary_metrics, softmax_signal_scores


def test_perfect_classifier() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    metrics = binary_metrics(scores, labels)
    assert metrics["accuracy"] == 1.0
    assert metrics["auc"] == 1.0
    assert metrics["rej30"] == math.inf
    assert metrics["rej50"] == math.inf


def test_random_classifier() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200_000)
    scores = rng.random(200_000)
    metrics = binary_metrics(scores, labels)
    assert metrics["accuracy"] == pytest.approx(0.5, abs=0.01)
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
    Accuracy with score > 0.5: signals 0.8, 0.6 and backgrounds 0.5, 0.3, 0.2 right: 5/10.
    """
    signal_scores = [0.8, 0.6, 0.5, 0.5, 0.1]
    background_scores = [0.9, 0.7, 0.5, 0.3, 0.2]
    scores = np.array(signal_scores + background_scores)
    labels = np.array([1] * 5 + [0] * 5)
    metrics = binary_metrics(scores, labels)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["auc"] == pytest.approx(12 / 25)
    assert metrics["rej30"] == pytest.approx(1 / 0.4)
    assert metrics["rej50"] == pytest.approx(1 / 0.45)


def test_values_are_plain_floats() -> None:
    metrics = binary_metrics(np.array([0.2, 0.9, 0.4]), np.array([0, 1, 1]))
    assert sorted(metrics) == ["accuracy", "auc", "rej30", "rej50"]
    assert all(type(value) is float for value in metrics.values())


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_is_an_error(label: int) -> None:
    with pytest.raises(ValueError, match=rf"both signal \(1\) and background \(0\).*\[{label}\]"):
        binary_metrics(np.array([0.1, 0.9]), np.array([label, label]))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\), got scores \(3,\) and labels \(2,\)"):
        binary_metrics(np.array([0.1, 0.5, 0.9]), np.array([0, 1]))


def test_two_column_scores_point_to_softmax_signal_scores() -> None:
    with pytest.raises(ValueError, match="softmax_signal_scores"):
        binary_metrics(np.zeros((4, 2)), np.array([0, 1, 0, 1]))


def test_labels_other_than_zero_and_one_are_an_error() -> None:
    with pytest.raises(ValueError, match="labels must be 0"):
        binary_metrics(np.array([0.1, 0.9]), np.array([0, 2]))


def test_non_finite_scores_are_an_error() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        binary_metrics(np.array([0.1, np.nan]), np.array([0, 1]))


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
