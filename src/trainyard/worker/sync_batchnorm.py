"""BatchNorm over the global batch for CPU ranks, where torch's SyncBatchNorm does not run.

torch's ``nn.SyncBatchNorm`` needs GPU kernels (``batch_norm_stats`` has no CPU version), so
on CPU ``training.sync_batchnorm`` would otherwise leave each rank normalising with its own
share of the batch, and N ranks would train another model than one rank. Here every rank
computes its share's mean and variance, one all-reduce (through gloo, with autograd) turns
them into the global batch's, and the jets are normalised with those. The gradient flows
back through the all-reduce, so each rank's loss reaches the other ranks' inputs as it does
on one rank with the whole batch.

Parameters and buffers keep BatchNorm's names, so state dicts and checkpoints are the same
as the model's without the conversion. In eval mode the running statistics are used and no
collective runs (validation may call the model a different number of times per rank).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm1d/2d/3d whose batch statistics are those of every rank's batch together."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"expected at least 2D input (batch, channels, ...), got {input.dim()}D"
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        use_batch_statistics = self.training or self.running_mean is None
        if not use_batch_statistics:
            return F.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        mean_C, var_C, count = _global_mean_and_variance(input)
        if self.training and self.track_running_stats:
            self._update_running_statistics(mean_C, var_C, count)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        mean = mean_C.to(input.dtype).view(shape)
        scale = torch.rsqrt(var_C + self.eps).to(input.dtype).view(shape)
        normalised = (input - mean) * scale
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised

    @torch.no_grad()
    def _update_running_statistics(
        self, mean_C: torch.Tensor, var_C: torch.Tensor, count: float
    ) -> None:
        """As nn.BatchNorm does: unbiased variance, momentum or a cumulative average."""
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        cumulative = 1.0 / float(self.num_batches_tracked)
        factor = cumulative if self.momentum is None else self.momentum
        unbiased_C = var_C * (count / max(count - 1.0, 1.0))
        self.running_mean.lerp_(mean_C.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_C.to(self.running_var.dtype), factor)


def _global_mean_and_variance(input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-channel mean and biased variance over all ranks' inputs (float64), and the count.

    Each rank contributes n, n * mean and n * (var + mean^2), summed in one all-reduce; the
    sums are float64, so var = E[x^2] - mean^2 loses nothing that float32 inputs carry.
    """
    dims = [0, *range(2, input.dim())]
    local_var_C, local_mean_C = torch.var_mean(input, dim=dims, correction=0)
    count = input.numel() // max(input.shape[1], 1)
    local_mean_C, local_var_C = local_mean_C.double(), local_var_C.double()
    sums = torch.cat(
        (
            local_mean_C * count,
            (local_var_C + local_mean_C.square()) * count,
            torch.tensor([float(count)], dtype=torch.float64),
        )
    )
    if dist.is_initialized() and dist.get_world_size() > 1:
        sums = _SumOverRanks.apply(sums)
    channels = input.shape[1]
    total = sums[-1]
    mean_C = sums[:channels] / total
    var_C = (sums[channels : 2 * channels] / total - mean_C.square()).clamp(min=0)
    return mean_C, var_C, float(total.detach())


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss depends
    on every rank's sums, so each rank's share of the gradient reaches all of them."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone()
        dist.all_reduce(summed)
        return summed


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a CpuSyncBatchNorm sharing its parameters and
    buffers; returns the converted module (the same object unless it is a BatchNorm itself)."""
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        converted = CpuSyncBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, convert_cpu_sync_batchnorm(child))
    return converted
