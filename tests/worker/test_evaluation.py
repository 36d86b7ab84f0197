"""Validation figures from a real staged set: argmax accuracy, signal-vs-rest AUC, and the
multi-class figures, on one rank and gathered from two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tests.metrics.test_classification import (
    THREE_CLASS_ARGMAX_ACCURACY,
    THREE_CLASS_AUC,
    THREE_CLASS_JETS,
    THREE_CLASS_SIGNAL_VS_REST_ACCURACY,
)
from tests.worker.staged import staged_jets
from tests.worker.test_distributed import _free_port, _join_two_ranks
from trainyard.metrics import (
    ROC_POINTS,
    ClassLabels,
    background_rejection,
    multiclass_metrics,
    validation_metric_names,
)
from trainyard.worker.distributed import World, close_distributed
from trainyard.worker.evaluation import Validation, ValidationShard, validate
from trainyard.worker.precision import Precision


class FixedScores(nn.Module):
    """Answers each jet with the probabilities of its row; the jet's first feature is its row."""

    def __init__(self, probabilities: list[tuple[float, ...]]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(probabilities).log())

    def forward(self, points, features, mask) -> torch.Tensor:
        return self.logits[features[:, 0, 0].long()]


def _evaluate(
    tmp_path: Path,
    jets: list[tuple[int, tuple[float, ...]]],
    signal_class: int,
    classes: ClassLabels | None = None,
    world: World | None = None,
) -> dict[str, float]:
    return _validate(tmp_path, jets, signal_class, classes, world).values


def _validate(
    tmp_path: Path,
    jets: list[tuple[int, tuple[float, ...]]],
    signal_class: int,
    classes: ClassLabels | None = None,
    world: World | None = None,
) -> Validation:
    world = world or World()
    dataset = staged_jets(tmp_path, [label for label, _ in jets])
    shard = ValidationShard(
        dataset, batch_size=4, world=world, signal_class=signal_class, classes=classes
    )
    try:
        return validate(
            FixedScores([probabilities for _, probabilities in jets]),
            shard,
            device=torch.device("cpu"),
            precision=Precision.choose("off", torch.device("cpu")),
            world=world,
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


def test_two_classes_report_exactly_the_binary_metrics(tmp_path: Path) -> None:
    jets = [(1, (0.3, 0.7)), (0, (0.8, 0.2)), (1, (0.6, 0.4)), (0, (0.45, 0.55))]
    assert tuple(_evaluate(tmp_path, jets, signal_class=1)) == validation_metric_names(None)


THREE_CLASSES = ClassLabels(labels=("is_qcd", "is_top", "is_massive"), background=0)


def _random_jets(num_jets: int) -> list[tuple[int, tuple[float, ...]]]:
    """Jets of three classes with probabilities that favour the true class."""
    rng = np.random.default_rng(4)
    labels = np.arange(num_jets) % 3
    probabilities = rng.dirichlet(np.ones(3), size=num_jets) + np.eye(3)[labels]
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return [(int(label), tuple(p)) for label, p in zip(labels, probabilities, strict=True)]


def test_the_roc_curve_sent_holds_the_reported_rejections(tmp_path: Path) -> None:
    """The down-sampled curve a validation sends for the dashboard gives back, at 30% and 50%
    signal efficiency, exactly the rejections the validation reports (signal: class 1)."""
    validation = _validate(tmp_path, _random_jets(300), signal_class=1)
    roc = validation.roc
    assert len(roc.signal_efficiency) == ROC_POINTS and roc.signal_efficiency[-1] == 1.0
    signal, background = np.array(roc.signal_efficiency), np.array(roc.background_efficiency)
    for efficiency, name in ((0.3, "val_rej30"), (0.5, "val_rej50")):
        rejection = background_rejection(signal, background, efficiency)
        assert rejection == pytest.approx(validation.values[name], rel=1e-6)


def test_three_classes_report_the_multiclass_metrics(tmp_path: Path) -> None:
    jets = _random_jets(30)
    metrics = _evaluate(tmp_path, jets, signal_class=1, classes=THREE_CLASSES)
    assert tuple(metrics) == validation_metric_names(THREE_CLASSES)
    probabilities = np.array([p for _, p in jets], dtype=np.float32)
    expected = multiclass_metrics(
        np.log(probabilities.astype(np.float64)), np.array([c for c, _ in jets]), THREE_CLASSES
    )
    for name, value in expected.items():
        assert metrics[f"val_{name}"] == pytest.approx(value, rel=1e-6), name
    assert metrics["val_auc"] == metrics["val_auc_is_top"], "signal class 1 against the rest"


def _gathered_rank(rank: int, port: int, folder: str) -> None:
    world = _join_two_ranks(rank, port)
    try:
        metrics = _evaluate(
            Path(folder) / f"rank{rank}", _random_jets(31), 1, THREE_CLASSES, world
        )
        torch.save(metrics, Path(folder) / f"rank{rank}.pt")
    finally:
        close_distributed()


def test_two_ranks_gather_the_multiclass_metrics_of_one(tmp_path: Path) -> None:
    """Each rank scores half the jets (one rank one jet more); the gathered (N, classes)
    log-probabilities give what one rank computes over all of them."""
    mp.spawn(_gathered_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    one_rank = _evaluate(tmp_path / "one", _random_jets(31), 1, THREE_CLASSES)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt") == pytest.approx(one_rank, rel=1e-12)
