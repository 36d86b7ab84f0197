"""The training loop of one trial: build in a fixed order, then `train()` reads top to bottom.

Resuming is exact: a checkpoint holds model, optimizer, schedule, data position and every RNG,
so on CPU a killed and resumed run ends with the same weights as an uninterrupted one.

With several ranks (resources.slots_per_trial > 1, started by torchrun) this loop runs on every
rank: `batch_size` is the global batch and each rank trains on its share, DDP or FSDP keeps the
ranks in step, and only rank 0 talks to the Master. Whatever ends the loop (a stop signal, the
searcher, a lost Master) is shared with every rank at the same step, so all ranks checkpoint
together and stop there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainyard.config import Length
from trainyard.data.batch import JetBatch
from trainyard.errors import ConfigError
from trainyard.models import input_roles
from trainyard.protocol import CheckpointEntry, DecisionAction, MetricKind, OutcomeState, TrialSpec
from trainyard.worker import checkpoint as ckpt
from trainyard.worker import parallel
from trainyard.worker.client import CredentialRefusedError, MasterUnreachableError
from trainyard.worker.data import load_trial_data
from trainyard.worker.distributed import World
from trainyard.worker.evaluation import validate
from trainyard.worker.nonfinite import NonFiniteGuard
from trainyard.worker.optim import build_lr_schedule, build_optimizer
from trainyard.worker.precision import Precision
from trainyard.worker.reporter import Reporter
from trainyard.worker.rng import capture_rng_state, own_generator, restore_rng_state, seed_all
from trainyard.worker.trained_state import load_trained_state, trained_state
from trainyard.worker.trial_model import build_trial_model

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The loop's own resumable state."""

    batches: int = 0
    last_validated_at: int = -1
    last_validation: dict[str, float] = field(default_factory=dict)
    """The metrics of the validation at `last_validated_at`; a resumed worker resends them,
    since a Master killed just after they were sent may never have stored them."""
    last_checkpoint_at: int = -1

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "last_validated_at": self.last_validated_at,
            "last_validation": dict(self.last_validation),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.last_validated_at = int(state["last_validated_at"])
        self.last_validation = dict(state.get("last_validation", {}))
        self.last_checkpoint_at = self.batches


class Trainer:
    """Trains one trial on this rank, in step with the trial's other ranks."""

    def __init__(
        self,
        *,
        spec: TrialSpec,
        reporter: Reporter,
        world: World,
        stop_requested: threading.Event,
        own_rng: bool = False,
    ) -> None:
        """`own_rng`: the trial shares its process with others (a pack), so its random stream
        (dropout) is a generator of its own, `self.generator`, which its checkpoints save."""
        self.spec = spec
        self.config = config = spec.config
        self.reporter = reporter
        self.world = world
        self.stop_requested = stop_requested
        training, resources = config.training, config.resources

        # Device: the executor placed us (CUDA_VISIBLE_DEVICES); each rank takes its own GPU.
        self.device = _select_device(resources.device, world.local_rank)
        torch.set_num_threads(int(os.environ.get("TRAINYARD_NUM_THREADS", os.cpu_count() or 1)))

        # Seed and determinism, before anything draws a random number. Every rank uses the
        # same seed here, so every rank builds the same initial model (FSDP relies on it).
        torch.manual_seed(training.seed)
        if training.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")

        # Data: staged once into the Master's cache (reused by later trials and other ranks),
        # read memory-mapped onto the device; each rank takes its slice of every global batch
        # of an epoch order seeded by (seed, epoch), so resuming needs no replay.
        self.global_batch_size = training.batch_size
        batch_size_key = (
            "hyperparameters.batch_size"
            if "batch_size" in config.hyperparameters
            else "training.batch_size"
        )
        batch_size = parallel.rank_batch_size(
            self.global_batch_size, world.size, key=batch_size_key
        )
        # The inputs the model takes decide what is staged and fed (points, vectors, ...).
        data = load_trial_data(
            config.data,
            roles=input_roles(config.model.name),
            model=f"model {config.model.name!r}",
            staging_dir=Path(spec.staging_dir),
            batch_size=batch_size,
            seed=training.seed,
            world=world,
            device=self.device,
            on_progress=lambda: reporter.heartbeat(batches=0),
        )
        if self.global_batch_size > data.train.num_jets:
            raise ConfigError(
                [
                    f"`{batch_size_key}`: a batch of {self.global_batch_size} is larger than the "
                    f"{data.train.num_jets} training jets of data.train; lower it to at most "
                    f"{data.train.num_jets}, or add training files"
                ],
                source=f"trial {spec.trial_number}",
            )
        self.train_loader, self.val_shard = data.train_loader, data.val_shard
        self.call = data.inputs.call
        self.batches_per_epoch = len(self.train_loader)
        self.total_batches = self._in_batches(training.max_length)
        self.validate_every = self._in_batches(training.validation_period)
        self.checkpoint_every = self._in_batches(config.checkpoint.period)

        # Model: zoo, user code or a weaver network file (which may bring its own loss), with
        # the options the trial's config resolved; one rank trains it as is, several wrap it
        # in DDP or FSDP.
        trial_model = build_trial_model(config, data, self.device, world)
        self.model, self.eval_model = trial_model.model, trial_model.eval_model
        self.strategy, self.loss = trial_model.strategy, trial_model.loss
        if world.rank > 0:  # its own dropout stream; rank 0 keeps the one-rank stream
            seed_all(training.seed, world.rank)

        # Optimizer (lr scaled with the number of ranks if asked) and LR schedule (per batch).
        optimizer = training.optimizer
        self.optimizer = build_optimizer(
            self.eval_model,  # the model's own parameter names decide their weight decay
            optimizer,
            lr=optimizer.lr * parallel.lr_scale(training.scale_lr, world.size),
        )
        self.lr_schedule = build_lr_schedule(
            self.optimizer, training.lr_schedule, total_batches=self.total_batches
        )

        # Mixed precision: bf16 autocast where the GPU has it; fp16 brings a grad scaler.
        self.precision = Precision.choose(training.amp, self.device)
        self.nonfinite = NonFiniteGuard(training.on_nonfinite, device=self.device, world=world)

        # Checkpoints, then resume from the newest usable one.
        self.checkpointer = ckpt.CheckpointManager(
            Path(spec.checkpoint_dir), keep=config.checkpoint.keep, world=world
        )
        self.state = TrainState()
        self._resume()
        # The trial's random stream from its first step on: the process's default generator
        # of its device, as seeded above or restored by the resume. A packed trial takes a
        # generator of its own in that state, which its checkpoints save in the default's
        # place (the pack draws its dropout masks from it: worker/packing/dropout.py).
        self.generator = own_generator(self.device) if own_rng else None
        logger.info(
            "trial %s: %s on %s, %d train / %d val jets, batch %d (%d rank(s), %s), "
            "%d batches (%d/epoch), %s",
            spec.trial_number,
            config.model.name,
            self.device,
            data.train.num_jets,
            data.val.num_jets,
            self.global_batch_size,
            world.size,
            self.strategy,
            self.total_batches,
            self.batches_per_epoch,
            self.precision.name,
        )

    def train(self) -> OutcomeState:
        """Train to the configured length; returns COMPLETED, STOPPED (by the searcher) or
        PAUSED (by a stop signal), checkpointed. Raises MasterUnreachableError, after
        checkpointing, when the Master is gone; CredentialRefusedError, without writing, when
        another attempt owns the trial; NonFiniteLossError on a NaN loss (policy error)."""
        self.begin()
        for batch in self.batches():
            outcome = self.after_step(self._train_step(batch))
            if outcome is not None:
                return outcome
        return self.finish()

    # The loop in three parts, so that a pack (worker/packing/loop.py) runs the very same
    # bookkeeping for each of its members around one fused step.

    def begin(self) -> None:
        """Before the first step: training mode, the trial's length told to the Master."""
        self.model.train()
        # The trial's length at once: progress shows "step n/total" from the first report.
        self.reporter.heartbeat(
            batches=self.state.batches, total_batches=self.total_batches, now=True
        )
        self._loss_sum = torch.zeros((), device=self.device)
        self._window_start, self._window_batches = time.perf_counter(), 0

    def batches(self) -> Iterator[JetBatch]:
        """The trial's remaining training batches, epoch after epoch, from its own loader
        (whose position a checkpoint records); ends at the configured length."""
        while self.state.batches < self.total_batches:
            for batch in self.train_loader:
                yield batch
                if self.state.batches >= self.total_batches:
                    return

    def after_step(self, loss: torch.Tensor) -> OutcomeState | None:
        """Everything after one optimizer step of `loss`: heartbeat, training report,
        validation and the searcher's decision, checkpoint, stop signal. Returns the
        outcome when the trial ends here (checkpointed), None to go on."""
        self._loss_sum += loss
        self.state.batches += 1
        self._window_batches += 1
        self.reporter.heartbeat(batches=self.state.batches, total_batches=self.total_batches)
        if self.state.batches % self.config.training.log_period_batches == 0:
            # .item() waits for the device: only once per log period.
            self._check_finite()
            elapsed = time.perf_counter() - self._window_start
            self._report_training(self._loss_sum.item(), self._window_batches, elapsed)
            self._loss_sum.zero_()
            self._window_start, self._window_batches = time.perf_counter(), 0
        told_to_stop = self.state.batches % self.validate_every == 0 and self._validate_and_ask()
        if self.state.batches % self.checkpoint_every == 0:
            self.save_checkpoint()
        # One small all-reduce per step, so every rank stops at the same step.
        signalled, master_gone, superseded = self.world.any(
            self.stop_requested.is_set(),
            self.reporter.gone is not None,
            self.reporter.superseded is not None,
        )
        self._leave_if_master_lost(master_gone, superseded)
        if signalled or told_to_stop:
            self.save_checkpoint()
            # A stop signal pauses (resumable); the searcher's stop is final.
            return OutcomeState.PAUSED if signalled else OutcomeState.STOPPED
        return None

    def finish(self) -> OutcomeState:
        """After the last step: a final validation if the last step had none, a checkpoint."""
        if self.state.last_validated_at != self.state.batches:
            self._validate_and_ask()
        self.save_checkpoint()
        self._leave_if_master_lost(
            *self.world.any(self.reporter.gone is not None, self.reporter.superseded is not None)
        )
        return OutcomeState.COMPLETED

    def save_checkpoint(self, *, notify_master: bool = True) -> None:
        """Write (once per step) a checkpoint and tell the Master which ones exist; all ranks
        call this, since the RNG states and FSDP's shards come from every rank. Never after a
        non-finite loss: `_check_finite` raises first."""
        if self.state.last_checkpoint_at == self.state.batches:
            return
        self._check_finite()
        state = {
            ckpt.LR_SCHEDULER: self.lr_schedule.state_dict(),
            ckpt.DATALOADER: self.train_loader.state_dict(),
            ckpt.TRAIN_STATE: self.state.state_dict(),
            ckpt.RNG: self.world.gather(capture_rng_state(own=self.generator)),
            **self.precision.state_dict(),
        }
        sharded = self.strategy == "fsdp"
        if sharded:
            parallel.sync_buffers(self.model)
        trained = trained_state(self.model, self.optimizer, sharded=sharded)
        config = self.config.model_dump(mode="json")
        if sharded:
            self.checkpointer.save(self.state.batches, state, config=config, shards=trained)
        elif self.world.is_primary:
            self.checkpointer.save(self.state.batches, {**trained, **state}, config=config)
        self.state.last_checkpoint_at = self.state.batches
        if notify_master:
            self._report_checkpoints()

    def _train_step(self, batch: JetBatch) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        with self.precision.autocast():
            logits = self.model(*batch.model_args(self.call))
            loss = (self.loss or F.cross_entropy)(logits.float(), batch.labels)
        self.precision.backward(loss)
        if not self.nonfinite.keep_update(loss.detach(), self.state.batches + 1):
            self.optimizer.zero_grad(set_to_none=True)
            return torch.zeros((), device=self.device)
        if self.config.training.grad_clip_norm is not None:
            self.precision.unscale(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.training.grad_clip_norm
            )
        self.precision.step(self.optimizer)
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _check_finite(self) -> None:
        def newest() -> str | None:
            found = self.checkpointer.list_checkpoints()
            return str(found[0]) if found else None

        self.nonfinite.check(last_checkpoint=newest, parameters=self.model.parameters())

    def _validate_and_ask(self) -> bool:
        """Validate on all ranks, report, and return True (on every rank) when the searcher
        or a pause says stop."""
        self._check_finite()
        if self.strategy == "fsdp":
            parallel.sync_buffers(self.model)
        validation = validate(
            self.eval_model,
            self.val_shard,
            device=self.device,
            precision=self.precision,
            world=self.world,
            call=self.call,
            loss=self.loss,
            on_progress=lambda: self.reporter.heartbeat(
                batches=self.state.batches, total_batches=self.total_batches
            ),
        )
        self.model.train()
        metrics = validation.values
        self.state.last_validated_at = self.state.batches
        self.state.last_validation = metrics
        self.reporter.metrics(
            MetricKind.VALIDATION,
            batches=self.state.batches,
            epoch=self._epoch(),
            values=metrics,
            roc=validation.roc,
        )
        logger.info("validation at batch %d: %s", self.state.batches, _fmt(metrics))
        decision = self.world.broadcast(self.reporter.decision())
        if decision.action is DecisionAction.STOP:
            logger.info("stopping at batch %d: %s", self.state.batches, decision.reason)
        return decision.action is DecisionAction.STOP

    def _report_training(self, loss_sum: float, num_batches: int, elapsed_s: float) -> None:
        loss = self.world.sum(loss_sum) / (num_batches * self.world.size)
        values = {
            "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "samples_per_second": num_batches * self.global_batch_size / max(elapsed_s, 1e-9),
            "batches_per_second": num_batches / max(elapsed_s, 1e-9),
        }
        self.reporter.metrics(
            MetricKind.TRAINING, batches=self.state.batches, epoch=self._epoch(), values=values
        )

    def _report_checkpoints(self) -> None:
        """Rank 0 tells the Master every checkpoint on disk (new ones, and those gone)."""
        if not self.world.is_primary:
            return
        present = [
            CheckpointEntry(
                batches=batches, path=str(path), epoch=batches / self.batches_per_epoch
            )
            for batches, path in self.checkpointer.scan()
        ]
        self.reporter.checkpoints(present)

    def _leave_if_master_lost(self, master_gone: bool, superseded: bool) -> None:
        """Another attempt owns the trial: leave at once, writing nothing. The Master is gone:
        every rank checkpoints (unregistered: nobody to tell) and leaves with the error."""
        if superseded:
            raise self.reporter.superseded or CredentialRefusedError(
                "the Master refused rank 0's credential; exiting without writing"
            )
        if master_gone:
            self.save_checkpoint(notify_master=False)
            raise self.reporter.gone or MasterUnreachableError(
                "the Master stopped answering rank 0; checkpointed and exiting"
            )

    def _resume(self) -> None:
        loaded = self.checkpointer.load_latest()
        if loaded is None:
            self._report_checkpoints()  # none on disk: none in the store either
            return
        for reason in loaded.skipped:
            logger.warning("refused checkpoint: %s", reason)
        state = loaded.state
        load_trained_state(self.model, self.optimizer, loaded, self.checkpointer)
        self.lr_schedule.load_state_dict(state[ckpt.LR_SCHEDULER])
        self.train_loader.load_state_dict(state[ckpt.DATALOADER])
        self.state.load_state_dict(state[ckpt.TRAIN_STATE])
        self.precision.load_state_dict(state)
        self._restore_rng(state[ckpt.RNG], loaded.world_size)
        self._resend_after_resume()
        logger.info(
            "resumed from %s at batch %d (written by %d rank(s), %s)",
            loaded.path,
            self.state.batches,
            loaded.world_size,
            "sharded" if loaded.shards is not None else "one file",
        )

    def _resend_after_resume(self) -> None:
        """What the Master may have missed when it was killed: the checkpoints on disk, the
        position, and the last validation (stored once, however often it is sent)."""
        self._report_checkpoints()
        self.reporter.heartbeat(
            batches=self.state.batches, total_batches=self.total_batches, now=True
        )
        if self.state.last_validation:
            self.reporter.metrics(
                MetricKind.VALIDATION,
                batches=self.state.last_validated_at,
                epoch=self.state.last_validated_at / self.batches_per_epoch,
                values=self.state.last_validation,
            )

    def _restore_rng(self, states: list[dict[str, Any]], saved_world_size: int) -> None:
        """Each rank's own RNG state when the number of ranks is unchanged; otherwise a
        deterministic fresh seed per rank, since there is no state to give each rank."""
        if saved_world_size == self.world.size:
            restore_rng_state(states[self.world.rank])
            return
        seed = seed_all(self.config.training.seed, self.world.rank, self.state.batches)
        logger.warning(
            "the checkpoint was written by %d rank(s), this run has %d: rank %d seeded with "
            "%d, so random draws (dropout) differ from an uninterrupted run",
            saved_world_size,
            self.world.size,
            self.world.rank,
            seed,
        )
        if self.config.training.scale_lr != "none":
            logger.warning(
                "training.scale_lr: the learning rate keeps the scaling for the %d rank(s) "
                "the checkpoint was written with",
                saved_world_size,
            )

    def _in_batches(self, length: Length) -> int:
        return (
            length.batches
            if length.batches is not None
            else length.epochs * self.batches_per_epoch
        )

    def _epoch(self) -> float:
        return self.state.batches / self.batches_per_epoch


def _select_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
