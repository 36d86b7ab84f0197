"""The pack's dropout: each member's mask at its own rate, from its own random stream.

A solo trial's nn.Dropout draws its masks from its process's default generator. Packed trials
share a process, so each member owns a generator (started from the state its solo process
would have, and saved in its checkpoints in place of the process's, worker/rng.py); under
vmap, `MemberDropout` draws each member's mask from that member's generator with the very op
nn.Dropout uses (`F.dropout` on the member's slice, `drawing_from` its generator). A member
therefore draws the masks its solo trial draws, whoever its packmates are and whenever they
join or leave, and resumes them exactly from its checkpoint.

vmap cannot take per-member generators, so the draws happen in the vmap rule of an
autograd.Function (`_MemberDropout`): it sees the whole pack's tensor and calls F.dropout once
per member (K small ops instead of one; one dropout layer in the zoo models, a few
microseconds each, benchmarks/packing.py measured it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainyard.worker.rng import drawing_from

RATE = "rate"
"""Name of the per-member dropout rate inside the skeleton."""

Draw = tuple[float, torch.Generator]
"""One member's dropout rate and the generator its masks are drawn from."""


class MemberDropout(nn.Module):
    """nn.Dropout for the pack, replacing it in the skeleton.

    Before each forward the pack sets `draws`: each member's (rate, generator), in the order
    of the vmapped member dimension. The `rate` buffer holds the same rates as a tensor,
    supplied per member through functional_call: vmap batches it, so the per-member rule runs
    even when the input itself is shared by every member (a dropout on a shared batch).
    With no member dropping (all rates 0) or in eval, the module is the identity and draws
    nothing, as nn.Dropout(p=0) is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(RATE, torch.zeros(()), persistent=False)
        self.draws: list[Draw] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and any(rate > 0 for rate, _ in self.draws)):
            return x
        return _MemberDropout.apply(x, getattr(self, RATE), self.draws)


class _MemberDropout(torch.autograd.Function):
    """Each member's slice dropped by F.dropout with the member's rate and generator.

    Only its vmap rule runs (the rate tensor is always batched); autograd records the ops it
    calls. torch.func requires forward and setup_context of an autograd.Function.
    """

    @staticmethod
    def forward(x: torch.Tensor, rate: torch.Tensor, draws: list[Draw]) -> torch.Tensor:  # type: ignore[override]
        raise RuntimeError("MemberDropout runs under the pack's vmap only")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[int | None, ...],
        x: torch.Tensor,
        rate: torch.Tensor,
        draws: list[Draw],
    ) -> tuple[torch.Tensor, int]:
        if len(draws) != info.batch_size:
            raise RuntimeError(f"{len(draws)} dropout draws set for {info.batch_size} members")
        if in_dims[0] is None:  # a shared input: every member drops its own copy
            members = x.unsqueeze(0).expand(info.batch_size, *x.shape)
        else:
            members = x.movedim(in_dims[0], 0)
        dropped = [
            _dropped(member, rate, generator)
            for member, (rate, generator) in zip(members.unbind(), draws, strict=True)
        ]
        return torch.stack(dropped), 0


def _dropped(x: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """What the member's own nn.Dropout(rate) returns in training, drawn from `generator`."""
    if rate == 0:
        return x  # nn.Dropout(p=0) draws nothing
    if x.device.type == "cuda" and (not x.is_contiguous() or x.data_ptr() % 16):
        # CUDA's fused dropout maps its random numbers to elements by a vectorised kernel
        # only for contiguous, 16-byte aligned input, as a solo trial's freshly allocated
        # activation is; a member's slice of the pack's tensor is made so too.
        x = x.clone(memory_format=torch.contiguous_format)
    with drawing_from(generator):
        return F.dropout(x, rate, training=True)
