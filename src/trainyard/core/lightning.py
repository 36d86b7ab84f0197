"""A PyTorch Lightning callback that makes a Lightning script a trainyard trial unchanged.

    with trainyard.core.init(hparams=DEFAULTS) as ctx:
        module = MyModule(**ctx.hparams)
        callback = TrainyardCallback(ctx)
        trainer = lightning.pytorch.Trainer(callbacks=[callback], ...)
        trainer.fit(module, data, ckpt_path=callback.resume_path)

The LightningModule is not touched. What it logs with `self.log` is reported: the metrics
logged during validation as validation metrics (what the searcher ranks), the others as
training metrics every `log_every_n_steps`. After each validation the trainer's full checkpoint
(`trainer.save_checkpoint`, weights, optimizers, loops) is registered with the trial, and the
searcher is asked whether to go on; a stop, pause or SIGTERM sets `trainer.should_stop`, and a
pause or SIGTERM between validations first saves a checkpoint so the trial resumes there.

Steps are the trainer's `global_step` (optimizer steps), the unit of the ASHA rungs.
Importing this module imports Lightning (and torch); `trainyard.core` itself does not.
"""

from __future__ import annotations

import numbers
import shutil
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from trainyard.core.context import Context

CHECKPOINT_FILE = "last.ckpt"
"""The Lightning checkpoint inside each registered checkpoint folder."""


class TrainyardCallback(pl.Callback):
    """Reports what the module logs, registers checkpoints and obeys the searcher."""

    def __init__(self, ctx: Context, *, check_every_n_steps: int | None = None) -> None:
        """
        Args:
            ctx: the trial's context (`trainyard.core.init()`).
            check_every_n_steps: between validations, how often (in optimizer steps) to check
                for a pause or kill; default: the trainer's `log_every_n_steps`. Every rank
                checks at the same steps (a collective under DDP).
        """
        self._ctx = ctx
        self._check_every = check_every_n_steps
        self._before_validation: dict[str, Any] = {}
        self._validation_names: set[str] = set()
        """What the module logged in the last validation: reported as validation only."""
        self._last_training_step = -1

    @property
    def resume_path(self) -> str | None:
        """The checkpoint file to pass as `trainer.fit(..., ckpt_path=)`, or None to start."""
        latest = self._ctx.checkpoint.latest()
        if latest is None or not (latest.path / CHECKPOINT_FILE).is_file():
            return None
        return str(latest.path / CHECKPOINT_FILE)

    # -- training ------------------------------------------------------------------------------

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
    ) -> None:
        step = trainer.global_step
        if step == self._last_training_step:
            return  # gradient accumulation: no optimizer step since the last batch
        self._last_training_step = step
        if step % max(trainer.log_every_n_steps, 1) == 0:
            metrics = _scalars(trainer.callback_metrics, exclude=self._validation_names)
            if metrics:
                self._ctx.report_training(step, metrics, epoch=trainer.current_epoch)
        every = self._check_every or max(trainer.log_every_n_steps, 1)
        if step % every == 0 and self._ctx.should_stop():
            self._save(trainer, step)
            trainer.should_stop = True

    # -- validation ----------------------------------------------------------------------------

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_validation = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        step = trainer.global_step
        logged = {
            name: value
            for name, value in trainer.callback_metrics.items()
            if self._before_validation.get(name) is not value
        }
        self._validation_names = set(logged)
        self._ctx.report_validation(step, _scalars(logged), epoch=trainer.current_epoch)
        self._save(trainer, step)
        if self._ctx.should_stop():
            trainer.should_stop = True

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self, trainer: pl.Trainer, step: int) -> None:
        """Every rank calls `trainer.save_checkpoint` (a collective for sharded strategies)
        into one folder beside the trial's checkpoints; the chief then registers it."""
        folder = self._ctx.checkpoint.directory / f".lightning-step-{step:08d}"
        if self._ctx.distributed.is_chief:
            shutil.rmtree(folder, ignore_errors=True)
        trainer.strategy.barrier("trainyard-checkpoint-folder")
        trainer.save_checkpoint(folder / CHECKPOINT_FILE)
        if self._ctx.distributed.is_chief:
            self._ctx.checkpoint.save(folder, step)
        trainer.strategy.barrier("trainyard-checkpoint-saved")


def _scalars(metrics: Mapping[str, Any], *, exclude: set[str] = frozenset()) -> dict[str, float]:
    """The logged values that are single numbers, as floats (Lightning keeps tensors)."""
    found = {}
    for name, value in metrics.items():
        if name in exclude:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            found[name] = float(value.detach().cpu().item())
        elif isinstance(value, numbers.Real):
            found[name] = float(value)
    return found


__all__ = ["CHECKPOINT_FILE", "TrainyardCallback"]
