"""Padded slots in ParticleNet's EdgeConv: which particles need their edges computed, and the
edge BatchNorm that counts the others without computing them.

Why: weaver-core's ParticleNet runs every layer on all B*P*N edges, padded slots included, and
its BatchNorm statistics cover them all. A padded slot carries zero features, and it sits at
the far-away padded coordinate, so when its jet has more than N padded slots its N nearest
neighbours are padded slots too: every edge of such an *idle* slot is (0, 0). All idle edges
therefore hold one and the same column at every layer of the edge MLP, and their block output
is masked away. Computing that column once and giving it the weight of all idle edges in the
BatchNorm statistics is the same computation as weaver-core's (the same statistics, the same
gradients through them) without the padded work, which is most of the work for real jets
(about 50 real particles in 128 slots).

The counted column enters the statistics here, by reading the BatchNorm module's weight and
buffers instead of calling it, so `counts_idle_edges` allows it only where that is what the
module's own forward would compute: exactly nn.BatchNorm1d/2d, training, in float32, outside
torch.func transforms. Any other norm (torch's SyncBatchNorm or trainyard's CPU one, whose
statistics are all-reduced over the ranks; the trial pack's MemberBatchNorm), eval, mixed
precision and vmap take the other path: every edge computed and each norm called as a module.

Shape legend as in particlenet.py, plus L: live particles of the batch (real ones, and padded
slots of jets with N or fewer padded slots), and E: their edges, L*N.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

PLAIN_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
"""The only norm classes whose statistics may take the counted idle column."""


def counts_idle_edges(norms: Iterable[nn.Module], features_CQ: torch.Tensor) -> bool:
    """Whether a block may skip its idle edges: every edge norm exactly a plain, affine,
    training nn.BatchNorm1d/2d, the edges in float32 (no autocast), outside torch.func.

    Under vmap the number of live particles could differ per member, and a subclass or
    another norm class may compute anything from its input (an all-reduce, per-member
    statistics): those must see every edge through their own forward.
    """
    if torch._C._functorch.maybe_current_level() is not None:
        return False
    if features_CQ.dtype != torch.float32 or torch.is_autocast_enabled(features_CQ.device.type):
        return False
    return all(
        type(norm) in PLAIN_NORMS and norm.training and norm.weight is not None for norm in norms
    )


def live_particles(padded_BP: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices (L,) into the batch's B*P particles of those whose edges are computed."""
    idle_BP = padded_BP & (padded_BP.sum(dim=-1, keepdim=True) > k)
    return torch.nonzero(~idle_BP.view(-1)).squeeze(1)


def edge_batch_norm_relu(
    bn: nn.BatchNorm1d | nn.BatchNorm2d,
    edges_CE: torch.Tensor,
    idle_C: torch.Tensor,
    idle_edges: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training BatchNorm module `bn`, then ReLU, over the live edges (C, E) and the idle
    column (C,) counted idle_edges times: what `bn` computes on weaver-core's (B, C, P, N)
    edges. Only where `counts_idle_edges` allows it.

    Reads and updates the module's own parameters and buffers (running statistics,
    num_batches_tracked) as nn.BatchNorm's training forward does.
    """
    with torch.no_grad():
        mean_C, var_C = _statistics(edges_CE, idle_C, idle_edges)
    if bn.track_running_stats and bn.running_mean is not None:
        _update_running_statistics(bn, mean_C, var_C, edges_CE.shape[1] + idle_edges)
    invstd_C = torch.rsqrt(var_C + bn.eps)
    return _NormReLU.apply(edges_CE, idle_C, bn.weight, bn.bias, mean_C, invstd_C, idle_edges)


class _NormReLU(torch.autograd.Function):
    """Training BatchNorm and ReLU of the live edges and the counted idle column, with a
    hand-written backward: autograd's own, through the statistics, writes about three more
    edge-sized tensors. Statistics come in precomputed (without graph); the backward adds
    their dependence on the inputs, as native batch_norm's does:

        dx = scale * g' + x * alpha + beta,  g' the gradient through ReLU,
        alpha = -scale * invstd * sum(g' xhat) / N,  beta = -scale * sum(g') / N - alpha * mean

    with the sums and N over live edges and idle_edges copies of the idle column.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        edges_CE: torch.Tensor,
        idle_C: torch.Tensor,
        weight_C: torch.Tensor,
        bias_C: torch.Tensor,
        mean_C: torch.Tensor,
        invstd_C: torch.Tensor,
        idle_edges: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # BatchNorm as one multiply-add per element: y = x * scale + shift.
        scale_C = invstd_C * weight_C
        shift_C = bias_C - mean_C * scale_C
        out_CE = torch.addcmul(shift_C.unsqueeze(1), edges_CE, scale_C.unsqueeze(1)).relu_()
        return out_CE, torch.relu(idle_C * scale_C + shift_C)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        edges_CE, idle_C, weight_C, _, mean_C, invstd_C, idle_edges = inputs
        ctx.save_for_backward(edges_CE, idle_C, weight_C, mean_C, invstd_C, *output)
        ctx.idle_edges = idle_edges

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_CE: torch.Tensor, grad_idle_C: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        edges_CE, idle_C, weight_C, mean_C, invstd_C, out_CE, out_idle_C = ctx.saved_tensors
        idle_edges = ctx.idle_edges
        total = edges_CE.shape[1] + idle_edges
        grad_CE = torch.ops.aten.threshold_backward(grad_CE, out_CE, 0)
        grad_idle_C = grad_idle_C * (out_idle_C > 0)
        # Summed pairwise: a BLAS dot (bmm) is as fast but about 1e-5 off at 1e5 edges.
        dot_C = torch.linalg.vecdot(grad_CE, edges_CE, dim=1)
        grad_sum_C = grad_CE.sum(dim=1) + grad_idle_C
        idle_hat_C = (idle_C - mean_C) * invstd_C
        grad_xhat_C = invstd_C * (dot_C - mean_C * grad_sum_C.sub(grad_idle_C))
        grad_xhat_C = grad_xhat_C + grad_idle_C * idle_hat_C
        scale_C = weight_C * invstd_C
        alpha_C = -scale_C * invstd_C * grad_xhat_C / total
        beta_C = -scale_C * grad_sum_C / total - alpha_C * mean_C
        grad_edges_CE = torch.addcmul(beta_C.unsqueeze(1), edges_CE, alpha_C.unsqueeze(1))
        grad_edges_CE.addcmul_(grad_CE, scale_C.unsqueeze(1))
        grad_idle_C = scale_C * grad_idle_C + idle_edges * (idle_C * alpha_C + beta_C)
        return grad_edges_CE, grad_idle_C, grad_xhat_C, grad_sum_C, None, None, None


def _statistics(
    edges_CE: torch.Tensor, idle_C: torch.Tensor, idle_edges: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel of the live edges and idle_edges copies of the
    idle column: the live edges' own (summed pairwise along contiguous memory, as precise as
    native batch_norm's), then combined with the idle column's as two groups (Chan et al.)."""
    # Two passes of pairwise sums (no graph), several times faster than var_mean.
    mean_C = edges_CE.sum(dim=1) / edges_CE.shape[1]
    var_C = (edges_CE - mean_C.unsqueeze(1)).square_().sum(dim=1) / edges_CE.shape[1]
    if idle_edges == 0:
        return mean_C, var_C
    live = edges_CE.shape[1]
    total = live + idle_edges
    delta_C = idle_C - mean_C
    mean_C = mean_C + delta_C * (idle_edges / total)
    var_C = var_C * (live / total) + delta_C.square() * (live * idle_edges / total**2)
    return mean_C, var_C


@torch.no_grad()
def _update_running_statistics(
    bn: nn.BatchNorm1d | nn.BatchNorm2d, mean_C: torch.Tensor, var_C: torch.Tensor, count: int
) -> None:
    """As nn.BatchNorm: exponential average with `momentum` (cumulative when None), the
    variance unbiased over `count` elements per channel."""
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / bn.num_batches_tracked if bn.momentum is None else bn.momentum
    unbiased_C = var_C * (count / max(count - 1, 1))
    bn.running_mean.mul_(1 - factor).add_(mean_C * factor)
    bn.running_var.mul_(1 - factor).add_(unbiased_C * factor)
