"""Trial packing: K trials of one architecture trained as one fused computation on one device.

A 366k-weight ParticleNet leaves most of a modern GPU idle, and a search runs many trials that
differ only in numbers that keep every tensor's shape (learning rate, weight decay, momentum,
dropout rate, seed; `trainyard.config.packing` holds the rule). `PackedModels` trains such
trials together: each step stacks the members' parameters and buffers along a new leading
dimension and runs `torch.func.vmap(functional_call(...))` over the members, so each layer is
one wider batched kernel instead of K small ones.

What stays per trial. Each member keeps its own ordinary `nn.Module`, optimizer and LR
schedule: the stack is rebuilt from the members' own leaf tensors every step (`torch.stack`,
through which gradients flow back to each member's parameters), BatchNorm running statistics
are written back to each member's buffers after the forward, and each optimizer steps only its
own parameters with its own hyperparameters. A member's state_dict, optimizer state and
checkpoint are therefore exactly those of a solo trial, and a member can leave the pack (the
searcher stopped it) or join it (a new trial) between any two steps. Each member gets its own
batch (its own data order and position; members may be at different steps); when all members
of a step get the very same batch, it is passed once instead of K times.

Exactness. The loss of each member is the mean cross entropy over its own batch; the pack
backpropagates their sum, and since no computation mixes members, each member's gradient is
its own loss's gradient. Without dropout (rate 0, or in eval), K packed members end with the
weights, BatchNorm statistics and optimizer state of the K trials trained one by one on the
same batches, within float tolerance (vmap runs each layer as a batched kernel, so sums are
ordered differently; Adam can magnify that noise, docs/packing.md says how far;
tests/worker/test_packing.py checks all this). A packed ParticleNet computes every edge,
where a solo one in float32 skips the idle padded ones: the same math, rounded differently
(docs/packing.md, "Exactness"). With dropout too: each member owns a generator (its trial's
random stream, `PackMember.generator`), and `MemberDropout` draws each member's masks at its
own rate from it by the op nn.Dropout uses, so a member draws its solo trial's masks,
whoever its packmates are. Only `nn.Dropout` modules may differ in rate between members;
every other non-tensor attribute (widths, k, other dropout variants) must be equal, or
`join` refuses; another random op in a model's forward draws for the whole pack at once
(vmap's `randomness="different"`), not per member.

How a worker uses it: `worker/packing/loop.py` (the runner starts one worker with K trials of
an experiment whose `resources.pack` allows it, each with its own credential). The loop
builds one solo `Trainer` per member (its own loader, seed, model, optimizer, schedule,
checkpoints and Reporter), joins their models and optimizers here, and around each
`train_step` runs each member's own bookkeeping (`Trainer.after_step`: reports, validation
with the ordinary `validate`, the searcher's decision, checkpoints in the solo format), so a
member that the searcher stops leaves at that step. A member's non-finite loss touches only
its own gradients, and `train_step`'s `keep_update` applies its own NaN policy. A place a
member leaves is taken by the next queued trial between two steps (`join`; joins.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.optim.lr_scheduler import LRScheduler

from trainyard.config.trial import TrialConfig
from trainyard.data.batch import DEFAULT_INPUT_ROLES, JetBatch
from trainyard.errors import ModelError
from trainyard.models import build_model
from trainyard.worker.optim import build_lr_schedule, build_optimizer
from trainyard.worker.packing.dropout import RATE, MemberDropout
from trainyard.worker.packing.skeleton import check_same_structure, skeleton_of, structure_of
from trainyard.worker.rng import own_generator


@dataclass
class PackMember:
    """One trial in a pack: ordinary model, optimizer and schedule, as a solo trial has them."""

    key: str
    """The caller's name for the trial (e.g. its id); unique within a pack."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: LRScheduler | None = None
    """Stepped once after each optimizer step, as in the solo loop."""
    grad_clip_norm: float | None = None
    """Clip this member's gradient norm before its step (training.grad_clip_norm)."""
    generator: torch.Generator | None = None
    """The trial's own random stream on the pack's device: its dropout masks are drawn from
    it (its checkpoints save it, worker/rng.py). None: one holding the device's default
    generator's state at `join`, what a solo trial started then would draw from."""


@dataclass
class _Slot:
    """A member and its tensors by name, as the pack's skeleton names them."""

    member: PackMember
    parameters: dict[str, nn.Parameter]
    buffers: dict[str, torch.Tensor]
    """Written back after each forward (BatchNorm running statistics)."""
    rates: dict[str, torch.Tensor]
    """Each nn.Dropout's rate as a 0-dim tensor, by the skeleton's `MemberDropout` buffer."""
    dropout_rates: dict[str, float]
    """The same rates by module name, as `MemberDropout.draws` takes them."""
    generator: torch.Generator
    """The member's own random stream (`PackMember.generator`)."""


def build_member(
    key: str,
    config: TrialConfig,
    *,
    num_features: int,
    num_classes: int,
    total_batches: int,
    device: torch.device,
) -> PackMember:
    """A member built as the solo Trainer builds its trial: the model initialised from
    `training.seed`, the optimizer and LR schedule from the trial's resolved config.

    The global RNG is left as it was, so building members in any order gives each the same
    initial weights as its solo trial, and its generator (dropout) the state the solo
    trial's process has at its first step.
    """
    training = config.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        model = build_model(
            config.model.name,
            num_features=num_features,
            num_classes=num_classes,
            options=config.model.options,
        ).to(device)
        generator = own_generator(device)
    optimizer = build_optimizer(model, training.optimizer, lr=training.optimizer.lr)
    return PackMember(
        key=key,
        model=model,
        optimizer=optimizer,
        lr_schedule=build_lr_schedule(
            optimizer, training.lr_schedule, total_batches=total_batches
        ),
        grad_clip_norm=training.grad_clip_norm,
        generator=generator,
    )


class PackedModels:
    """Trains the members of a pack one step at a time, all in one vmapped forward/backward.

    Members join and leave between steps; `train_step` trains those given a batch.
    """

    def __init__(self, *, device: torch.device, autocast_dtype: torch.dtype | None = None):
        """`autocast_dtype`: None (full precision) or torch.bfloat16. fp16 needs a gradient
        scaler, which would couple the members' steps, so packs refuse it (config does too)."""
        if autocast_dtype not in (None, torch.bfloat16):
            raise ValueError(f"packs train in fp32 or bf16, not {autocast_dtype}")
        self.device = device
        self.autocast_dtype = autocast_dtype
        self._slots: dict[str, _Slot] = {}
        self._skeleton: nn.Module | None = None
        self._structure: dict[str, str] = {}
        self._dropouts: dict[str, MemberDropout] = {}

    @property
    def keys(self) -> list[str]:
        """The members' keys, in the order they joined."""
        return list(self._slots)

    def member(self, key: str) -> PackMember:
        return self._slots[key].member

    def join(self, member: PackMember) -> None:
        """Add a trial; its model must match the pack's in everything but tensor values and
        dropout rates.

        Raises:
            ModelError: the key is taken, or the model differs from the pack's in structure
                (names the first difference).
        """
        if member.key in self._slots:
            raise ModelError(f"trial {member.key!r} is already in the pack; give each a new key")
        generator = member.generator
        if generator is None:
            generator = own_generator(self.device)
        assert generator.device.type == self.device.type, (
            "the generator lives on the pack's device"
        )
        structure = structure_of(member.model)
        if self._skeleton is None:
            self._skeleton, self._dropouts = skeleton_of(member.model, self.device)
            self._structure = structure
        else:
            check_same_structure(member.key, structure, self._structure)
        rates = {
            name: float(module.p)
            for name, module in member.model.named_modules()
            if type(module) is nn.Dropout
        }
        self._slots[member.key] = _Slot(
            member=member,
            parameters=dict(member.model.named_parameters()),
            buffers=dict(member.model.named_buffers()),
            rates={
                f"{name}.{RATE}": torch.tensor(rate, device=self.device)
                for name, rate in rates.items()
            },
            dropout_rates=rates,
            generator=generator,
        )

    def leave(self, key: str) -> PackMember:
        """Remove a trial (e.g. the searcher stopped it); its model and optimizer stay usable.
        The pack forgets its architecture when the last member leaves."""
        slot = self._slots.pop(key)
        if not self._slots:
            self._skeleton, self._structure, self._dropouts = None, {}, {}
        return slot.member

    def train_step(
        self,
        batches: Mapping[str, JetBatch],
        *,
        keep_update: Callable[[str, torch.Tensor], bool] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One optimizer step for each member named in `batches`, on its own batch.

        Members whose batches have equal shapes run as one vmapped group (usually all);
        others run in a group of their own. `keep_update(key, loss)`, asked after the
        backward, may refuse a member's update (its non-finite-loss policy): that member's
        gradients are dropped and its optimizer and schedule do not step. Returns each
        member's loss (detached, on the device; reading it waits for the device).
        """
        unknown = sorted(set(batches) - set(self._slots))
        if unknown:
            raise KeyError(f"no member(s) {unknown} in the pack; join them first")
        if not batches:
            return {}
        losses: dict[str, torch.Tensor] = {}
        for keys in _groups_by_shape(batches):
            slots = [self._slots[key] for key in keys]
            group_losses = self._forward(slots, [batches[key] for key in keys])
            losses.update(zip(keys, group_losses.unbind(), strict=True))
        torch.stack(list(losses.values())).sum().backward()
        for key in batches:
            member = self._slots[key].member
            if keep_update is None or keep_update(key, losses[key].detach()):
                _step(member)
            else:
                member.optimizer.zero_grad(set_to_none=True)
        return {key: loss.detach() for key, loss in losses.items()}

    def _forward(self, slots: list[_Slot], batches: list[JetBatch]) -> torch.Tensor:
        """Losses (K,) of one group, with the members' BatchNorm statistics updated."""
        skeleton = self._skeleton
        assert skeleton is not None
        skeleton.train()
        params = _stack(slots, lambda slot: slot.parameters)
        with torch.no_grad():
            buffers = _stack(slots, lambda slot: slot.buffers)
            rates = _stack(slots, lambda slot: slot.rates)
        for name, dropout in self._dropouts.items():
            dropout.draws = [(slot.dropout_rates[name], slot.generator) for slot in slots]
        shared = all(b is batches[0] for b in batches)
        inputs = batches[0] if shared else _stacked_batch(batches)
        data_dim = None if shared else 0

        def member_loss(
            p: dict[str, torch.Tensor],
            b: dict[str, torch.Tensor],
            r: dict[str, torch.Tensor],
            points: torch.Tensor,
            features: torch.Tensor,
            mask: torch.Tensor,
            labels: torch.Tensor,
        ) -> torch.Tensor:
            logits = functional_call(skeleton, {**p, **b, **r}, (points, features, mask))
            return F.cross_entropy(logits.float(), labels)

        batched = vmap(
            member_loss,
            in_dims=(0, 0, 0, data_dim, data_dim, data_dim, data_dim),
            randomness="different",
        )
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            losses = batched(
                params,
                buffers,
                rates,
                *inputs.model_args(DEFAULT_INPUT_ROLES),
                inputs.labels,
            )
        _write_back_buffers(slots, buffers)
        return losses


def _stack(
    slots: list[_Slot], tensors: Callable[[_Slot], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Each named tensor of the members, stacked along a new leading member dimension."""
    return {
        name: torch.stack([tensors(slot)[name] for slot in slots]) for name in tensors(slots[0])
    }


def _step(member: PackMember) -> None:
    """The solo loop's step for one member: clip, step, schedule, clear gradients."""
    if member.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(member.model.parameters(), member.grad_clip_norm)
    member.optimizer.step()
    if member.lr_schedule is not None:
        member.lr_schedule.step()
    member.optimizer.zero_grad(set_to_none=True)


def _write_back_buffers(slots: list[_Slot], stacked: dict[str, torch.Tensor]) -> None:
    """BatchNorm updated the stacked running statistics in place; copy each member's row
    back into its own buffers, so its module holds exactly what a solo forward leaves."""
    if not stacked:
        return
    with torch.no_grad():
        targets = [slot.buffers[name] for name in stacked for slot in slots]
        sources = [row for name in stacked for row in stacked[name].unbind()]
        torch._foreach_copy_(targets, sources)


def _stacked_batch(batches: list[JetBatch]) -> JetBatch:
    tensors = [b.tensors() for b in batches]
    return JetBatch.from_tensors(
        {name: torch.stack([t[name] for t in tensors]) for name in tensors[0]}
    )


def _groups_by_shape(batches: Mapping[str, JetBatch]) -> list[list[str]]:
    """Member keys grouped by the shapes of their batches (a short last batch of an epoch
    cannot be stacked with full ones), in order of first appearance."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for key, batch in batches.items():
        shape = tuple((t.shape, t.dtype) for t in batch.tensors().values())
        groups.setdefault(shape, []).append(key)
    return list(groups.values())
