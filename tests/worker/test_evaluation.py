"""Validation figures from a real staged set: argmax accuracy, signal-vs-rest AUC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.metrics.test_classification import (
    THREE_CLASS_ARGMAX_ACCURACY,
    THREE_CLASS_AUC,
    THREE_CLASS_JETS,
    THREE_CLASS_SIGNAL_VS_REST_ACCURACY,
)
from tests.worker.staged import staged_jets
from trainyard.worker.distributed import World
from trainyard.worker.evaluation import ValidationShard, evaluate
from trainyard.worker.precision import Precision


class FixedScores(nn.Module):
    """Answers each jet with the probabilities of its row; the jet's first feature is its row."""

    def __init__(self, probabilities: list[tuple[float, ...]]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(probabilities).log())

    def forward(self, points, features, mask) -> torch.Tensor:
        return self.logits[features[:, 0, 0].long()]


def _evaluate(
    tmp_path: Path, jets: list[tuple[int, tuple[float, ...]]], signal_class: int
) -> dict[str, float]:
    dataset = staged_jets(tmp_path, [label for label, _ in jets])
    shard = ValidationShard(dataset, batch_size=4, world=World(), signal_class=signal_class)
    try:
        return evaluate(
            FixedScores([probabilities for _, probabilities in jets]),
            shard,
            device=torch.device("cpu"),
            precision=Precision.choose("off", torch.device("cpu")),
            world=World(),
            on_progress=lambda: None,
        )
    finally:
        shard.close()


def test_three_class_accuracy_is_argmax_not_signal_vs_rest(tmp_path: Path) -> None:
    metrics = _evaluate(tmp_path, THREE_CLASS_JETS, signal_class=0)
    assert metrics["val_accuracy"] == pytest.approx(THREE_CLASS_ARGMAX_ACCURACY)
    assert metrics["val_accuracy"] != pytest.approx(THREE_CLASS_SIGNAL_VS_REST_ACCURACY)
    assert metrics["val_auc"] == pytest.approx(THREE_CLASS_AUC)
    probabilities = np.array([p for _, p in THREE_CLASS_JETS])
    labels = [label for label, _ in THREE_CLASS_JETS]
    expected_loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    assert metrics["val_loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_two_class_accuracy_is_unchanged(tmp_path: Path) -> None:
    """Two classes: argmax accuracy is what the cut at 0.5 on the signal probability gave."""
    jets = [(1, (0.3, 0.7)), (0, (0.8, 0.2)), (1, (0.6, 0.4)), (0, (0.45, 0.55)), (1, (0.1, 0.9))]
    metrics = _evaluate(tmp_path, jets, signal_class=1)
    cut = np.mean([(p[1] > 0.5) == (label == 1) for label, p in jets])
    assert metrics["val_accuracy"] == pytest.approx(cut) == pytest.approx(3 / 5)
