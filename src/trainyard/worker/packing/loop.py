"""The worker loop of a pack: several trials trained in one process, one fused step at a time.

Each member is an ordinary `Trainer`, built and resumed exactly as a solo trial is (its own
data loader and seed, model, optimizer, schedule, checkpoint folder, Reporter and Master
credential); only the step is shared: `PackedModels.train_step` trains every member on its own
next batch in one vmapped computation. Around that step each member runs the solo loop's own
bookkeeping (`Trainer.after_step`: heartbeat, training report, validation and the searcher's
decision, checkpoint, stop signal), so its metrics, checkpoints and outcome are those of an
ordinary trial, and its checkpoint resumes solo or in any pack.

A member that ends (completed, stopped by the searcher, paused by a signal, or errored on its
own: a non-finite loss under `on_nonfinite: error`, a failed validation) reports its outcome
for itself and leaves the pack; the others go on, and the worker exits when none is left. An
error in the shared step (out of memory, a bug) ends every member, which `run_pack`'s caller
reports. A Master that stops answering makes every member checkpoint before the worker exits.

A place left free (a member ended, or the pack started with fewer than K) is offered to the
experiment's next queued trial between two steps: `recruit` asks the Master (a join,
master/pack_joins.py) and builds the new member exactly as an initial one, which then trains
from its own newest checkpoint in the same fused step.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from trainyard.data.batch import JetBatch
from trainyard.errors import ModelError, TrainyardError
from trainyard.protocol import OutcomeState
from trainyard.worker.client import CredentialRefusedError, MasterClient, MasterUnreachableError
from trainyard.worker.packing.engine import PackedModels, PackMember
from trainyard.worker.trainer import Trainer

logger = logging.getLogger(__name__)

JOIN_RETRY_S = 1.0
"""With a place free and no trial to take, ask the Master again after this long (one small
request a second per pack, while the search has nothing queued)."""

_MEMBER = contextvars.ContextVar("pack_member", default="")
"""The member whose part of the loop runs now, as log lines name it ("trial 3: ")."""


def name_members_in_log() -> None:
    """Every line of the pack's one log names the member trial it is about, if any."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_MemberFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(member)s%(name)s: %(message)s")
        )


@contextlib.contextmanager
def logging_as(number: int) -> Iterator[None]:
    """Log lines written inside name trial `number`."""
    token = _MEMBER.set(f"trial {number}: ")
    try:
        yield
    finally:
        _MEMBER.reset(token)


class _MemberFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.member = _MEMBER.get()
        return True


@dataclass
class PackedTrial:
    """One member of the pack: its own Master client and its own solo Trainer."""

    client: MasterClient
    trainer: Trainer

    @property
    def key(self) -> str:
        return str(self.client.trial_id)

    @property
    def number(self) -> int:
        return self.trainer.spec.trial_number


Recruit = Callable[[list["PackedTrial"]], "PackedTrial | None"]
"""Given the members in the pack now: a new member that the Master gave this pack, built and
ready to join, or None."""


class PackLoop:
    """Trains its members until each has ended; `remaining` are those still in the pack.

    With `recruit`, a free place of the `size` is filled between steps (a join).
    """

    def __init__(
        self, members: list[PackedTrial], *, size: int = 0, recruit: Recruit | None = None
    ) -> None:
        first = members[0].trainer
        self.device = first.device
        self.pack = PackedModels(device=self.device, autocast_dtype=first.precision.dtype)
        self.remaining: dict[str, PackedTrial] = {}
        self._streams: dict[str, Iterator[JetBatch]] = {}
        self._size, self._recruit = size, recruit
        self._next_ask = 0.0
        for member in members:
            self._join(member)
        logger.info(
            "pack of %d trial(s) on %s: trials %s",
            len(members),
            self.device,
            ", ".join(str(m.number) for m in members),
        )

    def train(self) -> None:
        """Train every member to its end, reporting each member's outcome as it ends.

        Raises MasterUnreachableError (after every member checkpointed) when the Master is
        gone; any error of the shared step, leaving `remaining` to be reported errored.
        """
        for member in list(self.remaining.values()):
            self._for_member(member, _begin)
        while self.remaining:
            self._fill_places()
            batches: dict[str, JetBatch] = {}
            for member in list(self.remaining.values()):
                batch = next(self._streams[member.key], None)
                if batch is None:
                    self._for_member(member, lambda t: t.finish())
                else:
                    batches[member.key] = batch.to(self.device, non_blocking=True)
            if not batches:
                continue
            skipped: set[str] = set()
            losses = self.pack.train_step(
                batches, keep_update=functools.partial(self._keep, skipped=skipped)
            )
            for key, loss in losses.items():
                kept = torch.zeros_like(loss) if key in skipped else loss
                self._for_member(self.remaining[key], lambda t, kept=kept: t.after_step(kept))

    def _join(self, member: PackedTrial) -> None:
        """Add a member to the fused model (ModelError: its model differs in structure)."""
        trainer = member.trainer
        self.pack.join(
            PackMember(
                key=member.key,
                model=trainer.model,
                optimizer=trainer.optimizer,
                lr_schedule=trainer.lr_schedule,
                grad_clip_norm=trainer.config.training.grad_clip_norm,
                generator=trainer.generator,
            )
        )
        self.remaining[member.key] = member
        self._streams[member.key] = trainer.batches()

    def _fill_places(self) -> None:
        """Between two steps, with a place free: a queued trial of the experiment joins."""
        if self._recruit is None or len(self.remaining) >= self._size:
            return
        if time.monotonic() < self._next_ask:
            return
        self._next_ask = time.monotonic() + JOIN_RETRY_S
        try:
            member = self._recruit(list(self.remaining.values()))
        except MasterUnreachableError:
            self._checkpoint_all_unregistered(but="")
            raise
        if member is None:
            return
        with logging_as(member.number):
            try:
                self._join(member)
            except ModelError as err:  # the config's pack rule makes this a bug: give it back
                logger.error("trial %s cannot join the pack: %s", member.number, err)
                member.client.report_outcome(
                    OutcomeState.PAUSED,
                    f"could not join the pack of trials "
                    f"{', '.join(str(m.number) for m in self.remaining.values())}: {err}; "
                    "it is queued again and resumes in another worker",
                )
                return
            logger.info(
                "trial %s joined the pack (%d trial(s) in it now)",
                member.number,
                len(self.remaining),
            )
        self._for_member(member, _begin)

    def _keep(self, key: str, loss: torch.Tensor, *, skipped: set[str]) -> bool:
        """The member's own non-finite-loss policy decides whether its update is applied."""
        trainer = self.remaining[key].trainer
        keep = trainer.nonfinite.keep_update(loss, trainer.state.batches + 1)
        if not keep:
            skipped.add(key)
        return keep

    def _for_member(
        self, member: PackedTrial, step: Callable[[Trainer], OutcomeState | None]
    ) -> None:
        """Run one member's part of the loop; its outcome or its own error ends only it."""
        with logging_as(member.number):
            self._run_member(member, step)

    def _run_member(
        self, member: PackedTrial, step: Callable[[Trainer], OutcomeState | None]
    ) -> None:
        try:
            outcome = step(member.trainer)
        except MasterUnreachableError:
            self._checkpoint_all_unregistered(but=member.key)
            raise
        except CredentialRefusedError as err:
            logger.error("trial %s: %s; it leaves the pack without writing", member.number, err)
            self._leave(member)
            return
        except Exception as err:
            message = str(err) if isinstance(err, TrainyardError) else traceback.format_exc()
            logger.error("trial %s failed: %s", member.number, message)
            self._leave(member)
            member.client.report_outcome(OutcomeState.ERRORED, f"{type(err).__name__}: {message}")
            return
        if outcome is not None:
            self._leave(member)
            member.client.report_outcome(outcome)
            logger.info(
                "trial %s %s (attempt %d; %d trial(s) left in the pack)",
                member.number,
                outcome.value,
                member.trainer.spec.attempt,
                len(self.remaining),
            )

    def _leave(self, member: PackedTrial) -> None:
        self.pack.leave(member.key)
        del self.remaining[member.key], self._streams[member.key]
        self._next_ask = 0.0  # a place is free: ask for a trial at the next step

    def _checkpoint_all_unregistered(self, *, but: str) -> None:
        """The Master is gone: every other member writes its checkpoint (nobody to tell)."""
        for key, member in self.remaining.items():
            if key != but:
                member.trainer.save_checkpoint(notify_master=False)


def _begin(trainer: Trainer) -> None:
    trainer.begin()
