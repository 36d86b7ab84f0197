"""Validation over the whole validation set, with the top-tagging benchmark's figures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainyard.data.loader import JetLoader
from trainyard.metrics import binary_metrics, softmax_signal_scores
from trainyard.worker.precision import Precision


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: JetLoader,
    *,
    device: torch.device,
    precision: Precision,
    on_progress: Callable[[], None],
) -> dict[str, float]:
    """val_loss, val_accuracy, val_auc and background rejection at 30% / 50% signal efficiency."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    scores, labels = [], []
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(batch.points, batch.features, batch.mask).float()
        loss_sum += F.cross_entropy(logits, batch.labels, reduction="sum")
        scores.append(softmax_signal_scores(logits))
        labels.append(batch.labels.cpu().numpy())
        on_progress()
    all_labels = np.concatenate(labels)
    metrics = binary_metrics(np.concatenate(scores), all_labels)
    values = {"val_loss": loss_sum.item() / len(all_labels)}
    values.update({f"val_{name}": float(value) for name, value in metrics.items()})
    return values
