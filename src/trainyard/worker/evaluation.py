"""Validation over the whole validation set, with the top-tagging benchmark's figures and,
with more than two classes, the JetClass ones (``trainyard.metrics.multiclass``).

With several ranks each one scores a disjoint, contiguous share of the staged validation set
and the scores and labels are gathered, so the AUC is computed over every jet exactly once, as
on one rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainyard.data.batch import DEFAULT_INPUT_ROLES, JetBatch, ModelCall
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.loader import PARTICLENET_FIELDS, StagedLoader
from trainyard.metrics import (
    ClassLabels,
    argmax_accuracy,
    downsampled_roc,
    multiclass_metrics,
    predicted_classes,
    roc_curve,
    signal_metrics,
    softmax_signal_scores,
)
from trainyard.protocol import RocCurve
from trainyard.worker.distributed import World
from trainyard.worker.precision import Precision


class ValidationShard:
    """This rank's share of the staged validation set, in batches, the same number on every rank.

    Shares differ by at most one jet (``StagedLoader`` with ``full_batches=False``), so a rank
    may have one batch fewer than another. FSDP's forward is a collective, so every rank must
    run the same number of batches: a rank that is one short repeats its last batch with no
    real jets, and its result is dropped. Every jet is scored exactly once across ranks.
    """

    def __init__(
        self,
        dataset: StagedDataset,
        *,
        batch_size: int,
        world: World,
        fields: Mapping[str, str] = PARTICLENET_FIELDS,
        device: torch.device | str = "cpu",
        signal_class: int = 1,
        classes: ClassLabels | None = None,
    ) -> None:
        self._loader = StagedLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            seed=0,
            full_batches=False,
            rank=world.rank,
            world_size=world.size,
            fields=fields,
            device=device,
        )
        largest_share = -(-dataset.num_jets // world.size)
        self._num_batches = -(-largest_share // batch_size)
        self.signal_class = signal_class
        """The class whose probability is the score of val_auc and the rejections."""
        self.classes = classes
        """With more than two classes: the names and background of the multi-class figures."""

    def __len__(self) -> int:
        """Batches per validation, the same on every rank."""
        return self._num_batches

    def __iter__(self) -> Iterator[tuple[JetBatch, int]]:
        """Batches with how many of their leading jets are real (padding batches have none)."""
        self._loader.load_state_dict({"epoch": 0, "batch_index": 0})  # always the whole share
        last = None
        for batch in self._loader:
            last = batch
            yield batch, len(batch)
        assert last is not None, "StagedLoader refuses ranks without jets"
        for _ in range(self._num_batches - len(self._loader)):
            yield last, 0

    def close(self) -> None:
        self._loader.close()


@dataclass(frozen=True)
class Validation:
    """A validation's figures, and its ROC curve (down-sampled) for the dashboard."""

    values: dict[str, float]
    roc: RocCurve


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    shard: ValidationShard,
    *,
    device: torch.device,
    precision: Precision,
    world: World,
    on_progress: Callable[[], None],
    call: ModelCall = DEFAULT_INPUT_ROLES,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Validation:
    """val_loss, val_accuracy, val_auc and background rejection at 30% / 50% signal efficiency;
    with ``shard.classes`` also the multi-class figures, each prefixed val_; and the ROC curve
    of the signal class, down-sampled (``downsampled_roc``, eps_B to seven digits).

    Every rank returns the same figures, computed over the whole validation set, named as
    ``trainyard.metrics.validation_metric_names`` lists them.
    val_accuracy is argmax accuracy over all classes; val_auc, val_rej30 and val_rej50 take
    ``shard.signal_class`` as the signal and every other class together as the background,
    scored by the signal class's softmax probability (see ``trainyard.metrics``). The model
    is called with the batch's tensors ``call`` names; val_loss is the mean of ``loss`` (a
    network file's, taken as a batch mean) or else of the cross entropy over all jets.
    """
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    scores, predicted, labels, log_probabilities = [], [], [], []
    for batch, num_real in shard:
        batch = batch.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(*batch.model_args(call)).float()
        logits, batch_labels = logits[:num_real], batch.labels[:num_real]
        if loss is None:
            loss_sum += F.cross_entropy(logits, batch_labels, reduction="sum")
        else:
            loss_sum += loss(logits, batch_labels).double() * num_real
        scores.append(softmax_signal_scores(logits, signal_class=shard.signal_class))
        predicted.append(predicted_classes(logits))
        labels.append(batch_labels.cpu().numpy())
        if shard.classes is not None:
            log_probabilities.append(_log_softmax(logits))
        on_progress()
    all_scores = world.all_gather_array(np.concatenate(scores))
    all_predicted = world.all_gather_array(np.concatenate(predicted))
    all_labels = world.all_gather_array(np.concatenate(labels))
    is_signal = (all_labels == shard.signal_class).astype(np.int64)
    values = {
        "val_loss": world.sum(loss_sum.item()) / len(all_labels),
        "val_accuracy": argmax_accuracy(all_predicted, all_labels),
    }
    values.update(
        {f"val_{name}": value for name, value in signal_metrics(all_scores, is_signal).items()}
    )
    if shard.classes is not None:
        # Gathered flat: each rank's rows are whole, so the concatenation keeps them whole.
        num_classes = len(shard.classes.names)
        flat = world.all_gather_array(np.concatenate(log_probabilities).reshape(-1))
        figures = multiclass_metrics(flat.reshape(-1, num_classes), all_labels, shard.classes)
        values.update({f"val_{name}": value for name, value in figures.items()})
    signal_eff, background_eff = downsampled_roc(*reversed(roc_curve(all_scores, is_signal)))
    roc = RocCurve(
        signal_efficiency=signal_eff,
        background_efficiency=[float(f"{b:.7g}") for b in background_eff],
    )
    return Validation(values, roc)


def _log_softmax(logits: torch.Tensor) -> np.ndarray:
    """(N, classes) float64 log-probabilities: the tail of a rejection needs their resolution."""
    return torch.log_softmax(logits.detach().to(torch.float64), dim=1).cpu().numpy()
