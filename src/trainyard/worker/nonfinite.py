"""Watch for NaN or infinite losses, without making every step wait for the device.

Policy `error` (the default) remembers, on the device, the first batch whose loss was not
finite; the loop looks at it only where it waits for the device anyway (the log period,
validation, a checkpoint, the end), and then stops the trial with that batch named. Weights
trained after that batch are garbage, which is why a checkpoint is never written once it is
set. Policy `skip_batch` must decide before the optimizer steps, so it checks every loss (one
device wait per step) and drops that batch's update on every rank.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Literal

import torch

from trainyard.errors import TrainyardError
from trainyard.worker.distributed import World

logger = logging.getLogger(__name__)


class NonFiniteLossError(TrainyardError):
    """The loss became NaN or infinite (training.on_nonfinite: error)."""


class NonFiniteGuard:
    """The trial's policy for non-finite losses, on this rank."""

    def __init__(
        self, policy: Literal["error", "skip_batch"], *, device: torch.device, world: World
    ) -> None:
        self.policy = policy
        self.world = world
        self.num_skipped = 0
        self._first_bad_batch = torch.full((), -1, dtype=torch.long, device=device)

    def keep_update(self, loss: torch.Tensor, batch: int) -> bool:
        """Whether the update of `batch` (1-based) may be applied; call after backward."""
        finite = torch.isfinite(loss)
        if self.policy == "skip_batch":
            (skip,) = self.world.any(not bool(finite))  # one wait per step, on purpose
            if skip:
                self.num_skipped += 1
                logger.warning(
                    "loss is not finite at batch %d on some rank: batch skipped "
                    "(training.on_nonfinite: skip_batch; %d skipped so far)",
                    batch,
                    self.num_skipped,
                )
            return not skip
        unseen = self._first_bad_batch < 0
        self._first_bad_batch = torch.where(
            unseen & ~finite, torch.full_like(self._first_bad_batch, batch), self._first_bad_batch
        )
        return True

    def check(
        self,
        *,
        last_checkpoint: Callable[[], str | None],
        parameters: Iterable[torch.Tensor],
    ) -> None:
        """Raise NonFiniteLossError (on every rank) if any rank saw a non-finite loss, or a
        weight is no longer finite; waits for the device. `last_checkpoint` names the newest
        checkpoint on disk (asked only when there is an error to report)."""
        first_bad = int(self._first_bad_batch.item())
        weights_finite = all(bool(torch.isfinite(p).all()) for p in parameters)
        bad_loss, bad_weights = self.world.any(first_bad >= 0, not weights_finite)
        if not (bad_loss or bad_weights):
            return
        where = (
            f"the loss became NaN or infinite at batch {first_bad}"
            if first_bad >= 0
            else "the loss became NaN or infinite on another rank"
            if bad_loss
            else "a weight became NaN or infinite"
        )
        newest = last_checkpoint()
        resume = (
            f"the last finite checkpoint is {newest}, which a retry resumes from"
            if newest
            else "no checkpoint was written before it, so a retry starts over"
        )
        raise NonFiniteLossError(
            f"{where}; no checkpoint was written after it, and {resume}. Lower the learning "
            "rate, clip gradients (training.grad_clip_norm), check the inputs for NaN, or set "
            "training.on_nonfinite: skip_batch to drop such batches"
        )
