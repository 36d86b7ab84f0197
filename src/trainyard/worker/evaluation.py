"""Validation over the whole validation set, with the top-tagging benchmark's figures.

With several ranks each one scores a disjoint share of the set and the scores and labels are
gathered, so the AUC is computed over every jet exactly once, as on one rank.

Array legend (suffixes give the shape):
    N  jets in the validation set
    S  jets in this rank's share, padded to the same length on every rank
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainyard.data.features import JetArrays
from trainyard.data.loader import JetBatch, JetLoader
from trainyard.metrics import binary_metrics, softmax_signal_scores
from trainyard.worker.distributed import World
from trainyard.worker.precision import Precision


class ValidationShard:
    """Rank r's jets r, r + W, r + 2W, ... of the validation set, in batches.

    FSDP's forward is a collective, so every rank must run the same number of batches: shares
    one jet short are padded with a copy of jet 0, whose result is dropped. Every jet is
    scored exactly once across ranks; none is dropped to even the shares out.
    """

    def __init__(self, arrays: JetArrays, *, batch_size: int, world: World) -> None:
        num_jets = len(arrays)
        own_S = np.arange(world.rank, num_jets, world.size)
        self.num_real = len(own_S)
        if world.size > 1:
            num_padded = -(-num_jets // world.size)
            padded_S = np.concatenate([own_S, np.zeros(num_padded - len(own_S), np.int64)])
            arrays = JetArrays(
                points_NCP=arrays.points_NCP[padded_S],
                features_NCP=arrays.features_NCP[padded_S],
                mask_N1P=arrays.mask_N1P[padded_S],
                labels_N=arrays.labels_N[padded_S],
            )
        self._loader = JetLoader(
            arrays, batch_size=batch_size, shuffle=False, seed=0, drop_last=False
        )

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[JetBatch, int]]:
        """Batches with how many of their leading jets are real (the padding is at the end)."""
        start = 0
        for batch in self._loader:
            yield batch, max(0, min(len(batch), self.num_real - start))
            start += len(batch)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    shard: ValidationShard,
    *,
    device: torch.device,
    precision: Precision,
    world: World,
    on_progress: Callable[[], None],
) -> dict[str, float]:
    """val_loss, val_accuracy, val_auc and background rejection at 30% / 50% signal efficiency.

    Every rank returns the same figures, computed over the whole validation set.
    """
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    scores, labels = [], []
    for batch, num_real in shard:
        batch = batch.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(batch.points, batch.features, batch.mask).float()
        logits, batch_labels = logits[:num_real], batch.labels[:num_real]
        loss_sum += F.cross_entropy(logits, batch_labels, reduction="sum")
        scores.append(softmax_signal_scores(logits))
        labels.append(batch_labels.cpu().numpy())
        on_progress()
    all_scores = world.all_gather_array(np.concatenate(scores))
    all_labels = world.all_gather_array(np.concatenate(labels))
    metrics = binary_metrics(all_scores, all_labels)
    values = {"val_loss": world.sum(loss_sum.item()) / len(all_labels)}
    values.update({f"val_{name}": float(value) for name, value in metrics.items()})
    return values
