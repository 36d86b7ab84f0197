"""The pack's shared module: one model's code, with every tensor supplied per member.

`torch.func.functional_call` runs the skeleton with a member's (stacked) parameters and
buffers; vmap batches it over the members. Two kinds of layer are swapped for versions that
take per-member values as tensors and that vmap can batch on every device:

- nn.Dropout -> MemberDropout: the rate is a buffer, so members may differ in dropout;
- nn.BatchNorm1d/2d/3d -> MemberBatchNorm: plain tensor operations instead of the fused
  kernel (cuDNN's refuses vmap's non-contiguous batched input, and its bf16 backward refuses
  float32 running statistics), updating the member's running statistics in place as
  nn.BatchNorm does.

Everything else about the model must be the same for every member; `structure_of` lists it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainyard.errors import ModelError

RATE = "rate"
"""Name of the per-member dropout rate inside the skeleton."""


class MemberDropout(nn.Module):
    """nn.Dropout whose rate is a tensor, so that under vmap each member has its own rate.

    `active` is False when no member of the step drops anything: the module is then the
    identity, as nn.Dropout(p=0) is, and draws no random numbers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(RATE, torch.zeros(()), persistent=False)
        self.active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return x
        rate = getattr(self, RATE)
        keep = torch.rand_like(x) >= rate
        return x * keep / (1 - rate)


class MemberBatchNorm(nn.Module):
    """nn.BatchNorm{1,2,3}d as plain tensor operations, with the same parameter and buffer
    names; statistics in float32 (also under autocast), output in the input's dtype."""

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


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def skeleton_of(model: nn.Module, device: torch.device) -> tuple[nn.Module, list[MemberDropout]]:
    """A copy of the model that only lends its code to functional_call: every tensor is
    supplied per member at each step. nn.Dropout becomes MemberDropout and nn.BatchNorm
    MemberBatchNorm (same tensor names); returns the skeleton and its dropouts."""
    skeleton = copy.deepcopy(model)
    dropouts = []
    for name, module in list(skeleton.named_modules()):
        replacement: nn.Module
        if type(module) is nn.Dropout:
            replacement = MemberDropout().to(device)
            dropouts.append(replacement)
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
