"""A PyTorch Lightning script that trainyard runs as a script trial, module untouched.

The LightningModule below is ordinary Lightning: it logs with `self.log` and knows nothing of
trainyard. Three lines make the script a searchable, resumable trial: `trainyard.core.init()`
for the hyperparameters, `TrainyardCallback(ctx)` in the trainer's callbacks, and
`ckpt_path=callback.resume_path` when fitting. The data are two classes of Gaussian blobs in
16 features, as in the plain PyTorch example beside this one.

Run it by hand (local mode: metrics in trainyard-local/metrics.jsonl):
    python train.py --epochs 3
or as an ASHA search (from the repository's root):
    trainyard run examples/scripts/lightning/experiment.yaml
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainyard.core
from trainyard.core.lightning import TrainyardCallback

NUM_FEATURES = 16
DEFAULTS = {"lr": 0.01, "hidden": 32}
"""Hyperparameters of a run by hand; a trial's searched values replace them."""


class Classifier(pl.LightningModule):
    """A small MLP; the logged names are what the searcher and the dashboards see."""

    def __init__(self, lr: float, hidden: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(NUM_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.loss = nn.CrossEntropyLoss()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        features, labels = batch
        loss = self.loss(self.net(features), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        features, labels = batch
        logits = self.net(features)
        self.log("val_loss", self.loss(logits, labels), sync_dist=True)
        accuracy = (logits.argmax(1) == labels).float().mean()
        self.log("val_accuracy", accuracy, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=float(self.hparams.lr), momentum=0.9)


def blobs(num: int, seed: int) -> TensorDataset:
    """Two overlapping classes: signal is shifted by 0.5 in every feature."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (num,), generator=generator)
    features = torch.randn(num, NUM_FEATURES, generator=generator) + 0.5 * labels[:, None]
    return TensorDataset(features, labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batches-per-epoch", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    with trainyard.core.init(hparams=DEFAULTS) as ctx:
        module = Classifier(lr=float(ctx.hparams["lr"]), hidden=int(ctx.hparams["hidden"]))
        callback = TrainyardCallback(ctx)
        ranks = ctx.distributed  # trainyard starts ranks under torchrun's conventions
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            limit_train_batches=args.batches_per_epoch,
            devices=ranks.local_size,
            num_nodes=ranks.size // ranks.local_size,
            callbacks=[callback],
            logger=CSVLogger(ctx.output_dir / "lightning-logs"),  # its own logger still works
            log_every_n_steps=5,
            enable_checkpointing=False,  # the trial's checkpoints come from the callback
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        train = DataLoader(blobs(8192, seed=1), batch_size=args.batch_size, shuffle=True)
        val = DataLoader(blobs(2048, seed=2), batch_size=512)
        trainer.fit(module, train, val, ckpt_path=callback.resume_path)


if __name__ == "__main__":
    main()
