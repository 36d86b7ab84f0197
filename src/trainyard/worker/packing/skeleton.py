"""The pack's shared module: one model's code, with every tensor supplied per member.

`torch.func.functional_call` runs the skeleton with a member's (stacked) parameters and
buffers; vmap batches it over the members. Two kinds of layer are swapped for versions that
take per-member values as tensors and that vmap can batch on every device:

- nn.Dropout -> MemberDropout (dropout.py): each member's mask at its own rate, drawn from
  its own generator, so members may differ in dropout and each draws its solo trial's masks;
- nn.BatchNorm1d/2d/3d -> MemberBatchNorm: in training, one native batch_norm over all
  members with the member dimension folded into the channels (vmap's own rule for it fails on
  CUDA: cuDNN refuses its non-contiguous batched input, and its bf16 backward refuses float32
  running statistics); otherwise plain tensor operations. Either way it updates each member's
  running statistics in place as nn.BatchNorm does.

Everything else about the model must be the same for every member; `structure_of` lists it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainyard.errors import ModelError
from trainyard.worker.packing.dropout import MemberDropout


class MemberBatchNorm(nn.Module):
    """nn.BatchNorm{1,2,3}d for the pack, with the same parameter and buffer names: the
    folded native kernel in training (`_FoldedBatchNorm`), plain tensor operations otherwise
    (statistics in float32, output in the input's dtype)."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = norm.eps
        self.momentum = norm.momentum
        self.track_running_stats = norm.track_running_stats
        for name, parameter in norm.named_parameters(recurse=False):
            self.register_parameter(name, nn.Parameter(parameter.detach().clone()))
        for name, buffer in norm.named_buffers(recurse=False):
            self.register_buffer(name, buffer.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folds = (
            self.training
            and self.track_running_stats
            and self.momentum is not None
            and "weight" in self._parameters
        )
        if not folds:
            return self._plain(x)
        self.num_batches_tracked.add_(1)
        return _FoldedBatchNorm.apply(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.momentum,
            self.eps,
        )

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        """Separate tensor operations: for eval, no running statistics, momentum None or no
        affine parameters (none of which the zoo models train with)."""
        reduced = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        if self.training or not self.track_running_stats:
            mean = x32.mean(reduced)
            var = x32.var(reduced, unbiased=False)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count=x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if "weight" in self._parameters:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """As nn.BatchNorm: exponential average with `momentum` (cumulative when None), the
        variance unbiased."""
        tracked = self.num_batches_tracked
        tracked.add_(1)
        factor = 1.0 / tracked if self.momentum is None else self.momentum
        unbiased = var * (count / max(count - 1, 1))
        for name, value in (("running_mean", mean), ("running_var", unbiased)):
            running = getattr(self, name)
            running.mul_(1 - factor).add_(value * factor)


class _FoldedBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of all members at once: under vmap, the member dimension is
    folded into the channels, so one native (cuDNN on CUDA) batch_norm normalises every
    member's channels with that member's statistics, updates every member's running
    statistics in place, and autograd records that one op. Per channel it computes what the
    member's own nn.BatchNorm computes.

    Only its vmap rule runs (the pack always calls it under vmap); forward and backward exist
    because torch.func requires them of an autograd.Function, and serve a call outside vmap.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, weight, bias, _, _, momentum, eps = inputs
        ctx.save_for_backward(x, weight, bias)
        ctx.momentum, ctx.eps = momentum, eps

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        with torch.enable_grad():
            x, weight, bias = (t.detach().requires_grad_() for t in (x, weight, bias))
            y = F.batch_norm(x, None, None, weight, bias, True, ctx.momentum, ctx.eps)
            grads = torch.autograd.grad(y, (x, weight, bias), grad)
        return (*grads, None, None, None, None)

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[int | None, ...],
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> tuple[torch.Tensor, int]:
        members = info.batch_size
        x_BK = _members_at(x, in_dims[0], 1, members)
        batch, channels, rest = x_BK.shape[0], x_BK.shape[2], x_BK.shape[3:]
        folded = x_BK.reshape(batch, members * channels, *rest)
        weight_KC, bias_KC = (
            _members_at(t, d, 0, members) for t, d in ((weight, in_dims[1]), (bias, in_dims[2]))
        )
        stats_KC = [
            _members_at(t, d, 0, members)
            for t, d in ((running_mean, in_dims[3]), (running_var, in_dims[4]))
        ]
        flat_stats = [t.reshape(-1) for t in stats_KC]
        out = F.batch_norm(
            folded,
            flat_stats[0],
            flat_stats[1],
            weight_KC.reshape(-1),
            bias_KC.reshape(-1),
            True,
            momentum,
            eps,
        )
        for stats, flat in zip(stats_KC, flat_stats, strict=True):
            if flat.data_ptr() != stats.data_ptr():  # reshape had to copy: write back
                stats.copy_(flat.view_as(stats))
        return out.view(batch, members, channels, *rest), 1


def _members_at(tensor: torch.Tensor, dim: int | None, at: int, members: int) -> torch.Tensor:
    """The tensor with its member dimension at position `at` (expanded if it has none)."""
    if dim is None:
        return tensor.unsqueeze(at).expand(*tensor.shape[:at], members, *tensor.shape[at:])
    return tensor.movedim(dim, at)


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def skeleton_of(
    model: nn.Module, device: torch.device
) -> tuple[nn.Module, dict[str, MemberDropout]]:
    """A copy of the model that only lends its code to functional_call: every tensor is
    supplied per member at each step. nn.Dropout becomes MemberDropout and nn.BatchNorm
    MemberBatchNorm (same tensor names); returns the skeleton and its dropouts by name."""
    skeleton = copy.deepcopy(model)
    dropouts = {}
    for name, module in list(skeleton.named_modules()):
        replacement: nn.Module
        if type(module) is nn.Dropout:
            replacement = MemberDropout().to(device)
            dropouts[name] = replacement
        elif type(module) in _NORMS:
            replacement = MemberBatchNorm(module)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        skeleton.get_submodule(parent_name).register_module(child, replacement)
    return skeleton, dropouts


def structure_of(model: nn.Module) -> dict[str, str]:
    """Everything about a model that must be equal across a pack: module types, every
    plain attribute (k, widths, eps, ...; not nn.Dropout's rate), tensor names, shapes and
    dtypes. Keys are dotted paths, as the refusal message names them."""
    found: dict[str, str] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        found[f"{prefix}(type)"] = type(module).__qualname__
        for attribute, value in vars(module).items():
            if attribute.startswith("_") or attribute == "training":
                continue
            if type(module) is nn.Dropout and attribute == "p":
                continue
            found[prefix + attribute] = repr(value)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        found[name] = f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}"
    return found


def check_same_structure(key: str, structure: dict[str, str], pack: dict[str, str]) -> None:
    for name in sorted(set(structure) | set(pack)):
        if structure.get(name) != pack.get(name):
            raise ModelError(
                f"trial {key!r} cannot join the pack: its model differs in `{name}` "
                f"({structure.get(name, 'absent')}; the pack has {pack.get(name, 'absent')}); "
                "packed trials may differ only in weights, optimizer settings and dropout "
                "rates, so run it in a pack of its own (or with resources.pack: off)"
            )
