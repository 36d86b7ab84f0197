"""The training loop of one trial: build in a fixed order, then `train()` reads top to bottom.

Resuming is exact: a checkpoint holds model, optimizer, schedule, data position and every RNG,
so on CPU a killed and resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainyard.config import ExperimentConfig, Length
from trainyard.config.schema import TRAINING_HYPERPARAMETERS
from trainyard.data.features import FEATURE_NAMES, load_jet_arrays
from trainyard.data.loader import JetBatch, JetLoader
from trainyard.models import accepted_options, build_model
from trainyard.worker import checkpoint as ckpt
from trainyard.worker.client import MasterClient
from trainyard.worker.evaluation import evaluate
from trainyard.worker.optim import build_lr_schedule, build_optimizer
from trainyard.worker.precision import Precision
from trainyard.worker.rng import capture_rng_state, restore_rng_state

logger = logging.getLogger(__name__)

NUM_CLASSES = 2


@dataclass
class TrainState:
    """The loop's own resumable state."""

    batches: int = 0
    last_validated_at: int = -1
    last_checkpoint_at: int = -1

    def state_dict(self) -> dict[str, int]:
        return {"batches": self.batches, "last_validated_at": self.last_validated_at}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batches = int(state["batches"])
        self.last_validated_at = int(state["last_validated_at"])
        self.last_checkpoint_at = self.batches


class Trainer:
    """Trains one trial on one process (distributed training builds on this later)."""

    def __init__(
        self,
        *,
        spec: dict[str, Any],
        config: ExperimentConfig,
        client: MasterClient,
        stop_requested: threading.Event,
    ) -> None:
        self.config = config
        self.client = client
        self.stop_requested = stop_requested
        self.resolved_config = {**config.model_dump(mode="json"), "trial": spec}
        training = config.training
        hyperparameters: dict[str, Any] = spec["hyperparameters"]

        # Device: the executor placed us (CUDA_VISIBLE_DEVICES); use a GPU when we got one.
        self.device = _select_device(config.resources.device)
        torch.set_num_threads(int(os.environ.get("TRAINYARD_NUM_THREADS", os.cpu_count() or 1)))

        # Seed and determinism, before anything draws a random number.
        torch.manual_seed(training.seed)
        if training.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")

        # Data: whole-epoch permutations seeded by (seed, epoch), so resuming needs no replay.
        batch_size = int(hyperparameters.get("batch_size", training.batch_size))
        max_particles = config.data.max_particles
        train_arrays = load_jet_arrays(config.data.train, max_particles=max_particles)
        val_arrays = load_jet_arrays(config.data.val, max_particles=max_particles)
        self.train_loader = JetLoader(
            train_arrays, batch_size=batch_size, shuffle=True, seed=training.seed, drop_last=True
        )
        self.val_loader = JetLoader(
            val_arrays, batch_size=batch_size, shuffle=False, seed=0, drop_last=False
        )
        self.batches_per_epoch = len(self.train_loader)
        self.total_batches = self._in_batches(training.max_length)
        self.validate_every = self._in_batches(training.validation_period)
        self.checkpoint_every = self._in_batches(config.checkpoint.period)

        # Model: zoo or user code, with the hyperparameters that name its options.
        self.model = build_model(
            config.model.name,
            num_features=len(FEATURE_NAMES),
            num_classes=NUM_CLASSES,
            options=_model_options(config, hyperparameters),
        ).to(self.device)

        # Optimizer and LR schedule (stepped per batch).
        self.optimizer = build_optimizer(
            self.model.parameters(),
            training.optimizer,
            lr=float(hyperparameters.get("lr", training.optimizer.lr)),
            weight_decay=float(
                hyperparameters.get("weight_decay", training.optimizer.weight_decay)
            ),
            momentum=float(hyperparameters.get("momentum", training.optimizer.momentum)),
        )
        self.lr_schedule = build_lr_schedule(
            self.optimizer, training.lr_schedule, total_batches=self.total_batches
        )

        # Mixed precision: bf16 autocast where the GPU has it; fp16 brings a grad scaler.
        self.precision = Precision.choose(training.amp, self.device)

        # Checkpoints, then resume from the newest usable one.
        self.checkpointer = ckpt.CheckpointManager(
            spec["checkpoint_dir"], keep=config.checkpoint.keep
        )
        self.state = TrainState()
        self.heartbeat_interval_s: float = spec["heartbeat_interval_s"]
        self._last_beat = 0.0
        self._resume()
        logger.info(
            "trial %s: %s on %s, %d train / %d val jets, batch %d, %d batches (%d/epoch), %s",
            spec["trial_number"],
            config.model.name,
            self.device,
            len(train_arrays),
            len(val_arrays),
            batch_size,
            self.total_batches,
            self.batches_per_epoch,
            self.precision.name,
        )

    def train(self) -> str:
        """Train to the configured length; returns "completed" or "stopped" (checkpointed)."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        window_start, window_batches = time.perf_counter(), 0
        while self.state.batches < self.total_batches:
            for batch in self.train_loader:
                loss_sum += self._train_step(batch)
                self.state.batches += 1
                window_batches += 1
                self._heartbeat()
                if self.state.batches % self.config.training.log_period_batches == 0:
                    # .item() waits for the device: only once per log period.
                    elapsed = time.perf_counter() - window_start
                    self._report_training(
                        loss_sum.item() / window_batches, window_batches, elapsed
                    )
                    loss_sum.zero_()
                    window_start, window_batches = time.perf_counter(), 0
                if self.state.batches % self.validate_every == 0 and self._validate_and_ask():
                    self.save_checkpoint()
                    return "stopped"
                if self.state.batches % self.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.stop_requested.is_set():
                    self.save_checkpoint()
                    return "stopped"
                if self.state.batches >= self.total_batches:
                    break
        if self.state.last_validated_at != self.state.batches:
            self._validate_and_ask()
        self.save_checkpoint()
        return "completed"

    def save_checkpoint(self, *, notify_master: bool = True) -> None:
        """Write (once per step) a checkpoint and tell the Master where it is."""
        if self.state.last_checkpoint_at == self.state.batches:
            return
        state = {
            ckpt.MODEL: self.model.state_dict(),
            ckpt.OPTIMIZER: self.optimizer.state_dict(),
            ckpt.LR_SCHEDULER: self.lr_schedule.state_dict(),
            ckpt.DATALOADER: self.train_loader.state_dict(),
            ckpt.TRAIN_STATE: self.state.state_dict(),
            ckpt.RNG: capture_rng_state(),
            **self.precision.state_dict(),
        }
        path = self.checkpointer.save(self.state.batches, state, config=self.resolved_config)
        self.state.last_checkpoint_at = self.state.batches
        if notify_master:
            self.client.register_checkpoint(
                batches=self.state.batches, path=str(path), info={"epoch": self._epoch()}
            )

    def _train_step(self, batch: JetBatch) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        with self.precision.autocast():
            logits = self.model(batch.points, batch.features, batch.mask)
            loss = F.cross_entropy(logits.float(), batch.labels)
        self.precision.backward(loss)
        if self.config.training.grad_clip_norm is not None:
            self.precision.unscale(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.training.grad_clip_norm
            )
        self.precision.step(self.optimizer)
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _validate_and_ask(self) -> bool:
        """Validate, report, and return True when the searcher (or a pause) says stop."""
        metrics = evaluate(
            self.model,
            self.val_loader,
            device=self.device,
            precision=self.precision,
            on_progress=self._heartbeat,
        )
        self.model.train()
        self.state.last_validated_at = self.state.batches
        self.client.report_metrics(
            "validation", batches=self.state.batches, epoch=self._epoch(), values=metrics
        )
        logger.info("validation at batch %d: %s", self.state.batches, _fmt(metrics))
        stop, reason = self.client.should_stop()
        if stop:
            logger.info("stopping at batch %d: %s", self.state.batches, reason)
        return stop

    def _report_training(self, loss: float, num_batches: int, elapsed_s: float) -> None:
        samples_per_second = num_batches * self.train_loader.batch_size / max(elapsed_s, 1e-9)
        values = {
            "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "samples_per_second": samples_per_second,
            "batches_per_second": num_batches / max(elapsed_s, 1e-9),
        }
        self.client.report_metrics(
            "training", batches=self.state.batches, epoch=self._epoch(), values=values
        )

    def _heartbeat(self) -> None:
        """Beat from the loop itself, so a hung step falls silent and the Master notices."""
        now = time.monotonic()
        if now - self._last_beat >= self.heartbeat_interval_s:
            self.client.heartbeat(batches=self.state.batches, total_batches=self.total_batches)
            self._last_beat = now

    def _resume(self) -> None:
        loaded = self.checkpointer.load_latest()
        if loaded is None:
            return
        for reason in loaded.skipped:
            logger.warning("refused checkpoint: %s", reason)
        state = loaded.state
        self.model.load_state_dict(state[ckpt.MODEL])
        self.optimizer.load_state_dict(state[ckpt.OPTIMIZER])
        self.lr_schedule.load_state_dict(state[ckpt.LR_SCHEDULER])
        self.train_loader.load_state_dict(state[ckpt.DATALOADER])
        self.state.load_state_dict(state[ckpt.TRAIN_STATE])
        self.precision.load_state_dict(state)
        restore_rng_state(state[ckpt.RNG])
        logger.info("resumed from %s at batch %d", loaded.path, self.state.batches)

    def _in_batches(self, length: Length) -> int:
        return (
            length.batches
            if length.batches is not None
            else length.epochs * self.batches_per_epoch
        )

    def _epoch(self) -> float:
        return self.state.batches / self.batches_per_epoch


def _select_device(requested: str) -> torch.device:
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", 0)


def _model_options(config: ExperimentConfig, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The model's options plus every hyperparameter that is not a training one."""
    accepted = accepted_options(config.model.name)
    chosen = {
        name: value
        for name, value in hyperparameters.items()
        if name not in TRAINING_HYPERPARAMETERS and (accepted is None or name in accepted)
    }
    return {**config.model.options, **chosen}


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
