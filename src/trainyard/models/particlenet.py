"""ParticleNet (arXiv:1902.08570): a dynamic graph CNN over the particles of a jet.

Each EdgeConv block finds the k nearest neighbours of every particle (in the input coordinates
for the first block, in the previous block's features afterwards), applies a shared MLP to the
edge features (x_i, x_j - x_i), averages over the neighbours and adds a shortcut. The jet is
then summarised by averaging over its real particles and classified by fully connected layers.

Written from the paper for trainyard. Module and parameter names follow weaver-core's
ParticleNet (without fusion) so that its state_dict loads here with strict=True, and the
outputs, gradients and BatchNorm statistics are the same up to float rounding.

Why it is faster than the textbook form (docs/models.md, "Speed"): the first 1x1 convolution
of a block acts on (x_i, x_j - x_i), so with its weight split as [W_a, W_b] it equals
(W_a - W_b) x_i + W_b x_j. Both terms are computed once per particle and only W_b x_j is
gathered to the edges, which removes about a third of the edge multiply-adds. In float32
training with plain BatchNorms, only the edges of live particles are computed: a padded slot
whose jet has more than N padded slots has only padded neighbours, so all such edges hold one
identical column per layer, which the edge BatchNorm counts as many times as there are such
edges (`_idle_edges.py`): the statistics and gradients are weaver's over all B*P*N edges,
padded ones included. Other norms (SyncBatchNorm, the trial pack's), eval, mixed precision and
vmap compute every edge and call each norm as a module. Inside a block the
particles of the batch are columns of one (C, B*P) matrix and the live edges columns of one
(C, L*N) matrix, so every 1x1 convolution is one plain matrix product and the mean over
neighbours reduces contiguous memory; BatchNorm statistics are summed along contiguous
memory, as precisely as weaver's (PyTorch's CPU BatchNorm sums a (rows, C) layout in plain
float32, about 1e-4 off).

Shape legend for tensor-name suffixes:
    B  batch (jets)
    C  channels: coordinates or features per particle (the width changes from layer to layer)
    P  particle slots per jet, padded
    N  nearest neighbours per particle (the k of kNN)
    K  classes
    Q  particles of the whole batch, B*P (column b*P + p is particle p of jet b)
    L  live particles of the batch (`_idle_edges.live_particles`), in the order of Q
    E  edges of the live particles, L*N (column l*N + n is the n-th neighbour of live l)
"""

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from trainyard.errors import ModelError
from trainyard.models._checks import channel_lists, dropout_rate, positive_int
from trainyard.models._idle_edges import (
    counts_idle_edges,
    edge_batch_norm_relu,
    live_particles,
)
from trainyard.models._masking import real_counts, real_particles

# Padded particles are moved to this coordinate so no real particle picks them as a neighbour
# while it still has real candidates; 1e9 squared stays finite in float32.
PADDED_COORDINATE = 1e9

PARTICLENET_CONV_CHANNELS = ((64, 64, 64), (128, 128, 128), (256, 256, 256))
PARTICLENET_LITE_CONV_CHANNELS = ((32, 32, 32), (64, 64, 64))


def pairwise_squared_distances(coords_BCP: torch.Tensor) -> torch.Tensor:
    """Squared distances (B, P, P) from |a|^2 - 2 a.b + |b|^2: one matmul, no (B, C, P, P).

    Runs in at least float32, also under autocast: the padded coordinate overflows float16.
    """
    with torch.autocast(device_type=coords_BCP.device.type, enabled=False):
        coords_BCP = coords_BCP.to(torch.promote_types(coords_BCP.dtype, torch.float32))
        squared_norm_B1P = coords_BCP.square().sum(dim=1, keepdim=True)
        gram_BPP = torch.matmul(coords_BCP.transpose(1, 2), coords_BCP)
        distances_BPP = squared_norm_B1P.transpose(1, 2) - 2 * gram_BPP + squared_norm_B1P
        return distances_BPP.clamp(min=0)


def nearest_neighbours(coords_BCP: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, P, N=k) of each particle's k nearest others.

    The nearest hit of a particle is itself (distance 0), so k + 1 are taken and the first
    dropped; topk is deterministic on CPU and CUDA. Indices carry no gradient, so no graph.
    """
    with torch.no_grad():
        distances_BPP = pairwise_squared_distances(coords_BCP)
        return distances_BPP.topk(k + 1, dim=-1, largest=False, sorted=True).indices[:, :, 1:]


def neighbour_columns(neighbours_BPN: torch.Tensor) -> torch.Tensor:
    """Column numbers (Q*N,) of the neighbours among the batch's (C, Q) particles, edge by edge."""
    batch, points, _ = neighbours_BPN.shape
    first_B11 = torch.arange(batch, device=neighbours_BPN.device).view(batch, 1, 1) * points
    return (neighbours_BPN + first_B11).view(-1)


def _moved_out_of_reach(coords_BCP: torch.Tensor, padded_B1P: torch.Tensor) -> torch.Tensor:
    """Coordinates with padded slots at PADDED_COORDINATE, in at least float32, contiguous.

    Under float16 autocast the features used as coordinates are float16, where 1e9 is inf.
    """
    coords_BCP = coords_BCP.to(torch.promote_types(coords_BCP.dtype, torch.float32))
    return coords_BCP.masked_fill(padded_B1P, PADDED_COORDINATE).contiguous()


def _matrix(conv: nn.Conv1d | nn.Conv2d) -> torch.Tensor:
    """The (out, in) matrix of a bias-free 1x1 convolution, as a view of its weight."""
    return conv.weight.view(conv.out_channels, conv.in_channels)


def _batch_norm(bn: nn.BatchNorm1d, columns_CQ: torch.Tensor) -> torch.Tensor:
    """The BatchNorm module on particle columns (C, Q), channel by channel.

    The module itself runs on a (1, C, Q) view, so its statistics cover the same elements as
    in weaver's (B, C, P) layout, summed as precisely, and its running statistics and
    num_batches_tracked update the same way (the pack swaps the module for its own).
    """
    return bn(columns_CQ.unsqueeze(0)).squeeze(0)


def _columns(tensor_BCP: torch.Tensor) -> torch.Tensor:
    """(B, C, P) as the (C, Q) matrix of particle columns (a copy)."""
    batch, channels, points = tensor_BCP.shape
    return tensor_BCP.transpose(0, 1).reshape(channels, batch * points)


def _per_jet(columns_CQ: torch.Tensor, batch: int) -> torch.Tensor:
    """The (C, Q) particle columns as (B, C, P) (a view)."""
    return columns_CQ.view(columns_CQ.shape[0], batch, -1).transpose(0, 1)


class EdgeConv(nn.Module):
    """One EdgeConv block: kNN graph, shared edge MLP, mean over neighbours, shortcut, ReLU."""

    def __init__(self, k: int, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.k = k
        # Off: every edge computed, as under another norm class (`set_idle_edge_skipping`).
        self.skips_idle_edges = True
        widths = [2 * in_channels, *out_channels]
        # Bias-free convolutions: the BatchNorm right after each one has its own shift.
        self.convs = nn.ModuleList(
            nn.Conv2d(width_in, width_out, kernel_size=1, bias=False)
            for width_in, width_out in pairwise(widths)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for width in out_channels)
        self.sc: nn.Conv1d | None
        if in_channels == out_channels[-1]:
            self.sc = None
        else:
            self.sc = nn.Conv1d(in_channels, out_channels[-1], kernel_size=1, bias=False)
            self.sc_bn = nn.BatchNorm1d(out_channels[-1])

    def forward(
        self, coords_BCP: torch.Tensor, features_CQ: torch.Tensor, padded_BP: torch.Tensor
    ) -> torch.Tensor:
        """New particle columns (C_out, Q); neighbours are searched in coords_BCP.

        Where `counts_idle_edges` allows (plain BatchNorms training in float32), only the
        edges of live particles are computed and the identical edges of the idle padded slots
        enter every edge BatchNorm as one constant column counted that many times; otherwise
        every edge is computed and each norm called as a module. Either way the statistics
        are weaver's over all B*P*N edges.
        """
        points = coords_BCP.shape[-1]
        if points <= self.k:
            raise ModelError(
                f"EdgeConv with k={self.k} needs more than {self.k} particle slots per jet, "
                f"got {points}; pad the inputs to at least {self.k + 1} particles or lower k"
            )
        columns_E = neighbour_columns(nearest_neighbours(coords_BCP, self.k))
        if self.skips_idle_edges and counts_idle_edges(self.bns, features_CQ):
            messages_CQ = self._live_messages(features_CQ, padded_BP, columns_E)
        else:
            messages_CQ = self._all_messages(features_CQ, columns_E)
        shortcut_CQ = features_CQ
        if self.sc is not None:
            shortcut_CQ = _batch_norm(self.sc_bn, torch.mm(_matrix(self.sc), features_CQ))
        return torch.relu(shortcut_CQ + messages_CQ)

    def _live_messages(
        self, features_CQ: torch.Tensor, padded_BP: torch.Tensor, columns_E: torch.Tensor
    ) -> torch.Tensor:
        """Mean edge-MLP output per particle (C, Q), computed for the live particles only
        (zero for the idle ones, whose output is masked away)."""
        live_L = live_particles(padded_BP, self.k)
        columns_E = columns_E.view(-1, self.k).index_select(0, live_L).view(-1)
        edges_CE = self._first_convolution(
            features_CQ.index_select(1, live_L), features_CQ, columns_E
        )
        # An idle slot's edges join it to other idle slots, all with zero features: their
        # first convolution is zero, and every later layer maps them to one common column.
        idle_C = edges_CE.new_zeros(edges_CE.shape[0])
        idle_edges = (features_CQ.shape[1] - live_L.numel()) * self.k
        for index, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if index > 0:
                edges_CE = torch.mm(_matrix(conv), edges_CE)
                idle_C = torch.mm(_matrix(conv), idle_C.unsqueeze(1)).squeeze(1)
            edges_CE, idle_C = edge_batch_norm_relu(bn, edges_CE, idle_C, idle_edges)
        messages_CL = self._neighbour_mean(edges_CE)
        messages_CQ = messages_CL.new_zeros(messages_CL.shape[0], features_CQ.shape[1])
        return messages_CQ.index_copy(1, live_L, messages_CL)

    def _all_messages(self, features_CQ: torch.Tensor, columns_E: torch.Tensor) -> torch.Tensor:
        """Mean edge-MLP output per particle (C, Q) over every edge, each norm called as a
        module on a (1, C, Q*N, 1) view: the same elements per channel as weaver's (B, C, P,
        N), so a SyncBatchNorm all-reduces them and the pack's MemberBatchNorm sees them."""
        edges_CE = self._first_convolution(features_CQ, features_CQ, columns_E)
        for index, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if index > 0:
                edges_CE = torch.mm(_matrix(conv), edges_CE)
            edges_CE = torch.relu(bn(edges_CE.view(1, *edges_CE.shape, 1)).view(edges_CE.shape))
        return self._neighbour_mean(edges_CE)

    def _neighbour_mean(self, edges_CE: torch.Tensor) -> torch.Tensor:
        """Mean over each particle's N edges: (C, E) -> (C, E/N)."""
        # A sum, then the division on the small result: the backward of mean would write a
        # divided copy of the whole edge gradient, that of sum only broadcasts it.
        return edges_CE.view(edges_CE.shape[0], -1, self.k).sum(dim=-1) / self.k

    def _first_convolution(
        self, centres_CL: torch.Tensor, features_CQ: torch.Tensor, columns_E: torch.Tensor
    ) -> torch.Tensor:
        """The first convolution of the edges (x_i, x_j - x_i) of the centre particles
        `centres_CL` (L of them, N edges each), as (C, L*N), before BN; the neighbours are
        the columns `columns_E` of all particles `features_CQ`.

        W [x_i; x_j - x_i] = (W_a - W_b) x_i + W_b x_j: two products per particle, then one
        gather of the W_b x_j columns and one broadcast add of the centre columns.
        """
        centre_weight, neighbour_weight = _matrix(self.convs[0]).chunk(2, dim=1)
        centre_CL = torch.mm(centre_weight - neighbour_weight, centres_CL)
        neighbour_CQ = torch.mm(neighbour_weight, features_CQ)
        neighbours_CLN = neighbour_CQ.index_select(1, columns_E).view(*centre_CL.shape, self.k)
        return (neighbours_CLN + centre_CL.unsqueeze(-1)).flatten(1)


def set_idle_edge_skipping(model: nn.Module, enabled: bool) -> None:
    """Let the model's EdgeConv blocks skip idle edges where `counts_idle_edges` allows (the
    default), or make them compute every edge and call each norm as a module, as a trial
    pack's members do: the packing tests compare a pack with solo trials computing the same
    way (docs/packing.md, "Exactness")."""
    for module in model.modules():
        if isinstance(module, EdgeConv):
            module.skips_idle_edges = enabled


class ParticleNet(nn.Module):
    """ParticleNet without fusion: input BatchNorm, EdgeConv blocks, masked mean, FC head.

    conv_params is one (k, channels) pair per EdgeConv block and fc_params one (width,
    dropout) pair per hidden fully connected layer, as in weaver-core.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        conv_params: Sequence[tuple[int, Sequence[int]]],
        fc_params: Sequence[tuple[int, float]],
    ) -> None:
        super().__init__()
        if not conv_params:
            raise ModelError("ParticleNet needs at least one EdgeConv block in conv_params")
        self.bn_fts = nn.BatchNorm1d(num_features)
        self.edge_convs = nn.ModuleList()
        width = num_features
        for k, channels in conv_params:
            self.edge_convs.append(EdgeConv(k, width, channels))
            width = channels[-1]
        head: list[nn.Module] = []
        for hidden_width, rate in fc_params:
            head.append(nn.Sequential(nn.Linear(width, hidden_width), nn.ReLU(), nn.Dropout(rate)))
            width = hidden_width
        head.append(nn.Linear(width, num_classes))
        self.fc = nn.Sequential(*head)

    def forward(
        self,
        points_BCP: torch.Tensor,
        features_BCP: torch.Tensor,
        mask_B1P: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, K); padded slots never act as neighbours nor enter the average."""
        real_B1P = real_particles(features_BCP, mask_B1P)
        padded_B1P = ~real_B1P
        padded_1Q = _columns(padded_B1P)
        counts_B1 = real_counts(real_B1P, features_BCP.dtype)
        batch = features_BCP.shape[0]
        # The input BatchNorm sees padded slots too, as weaver's does; they are zeroed after.
        features_CQ = _batch_norm(self.bn_fts, _columns(features_BCP))
        features_CQ = features_CQ.masked_fill(padded_1Q, 0)
        coords_BCP = points_BCP
        for block in self.edge_convs:
            coords_BCP = _moved_out_of_reach(coords_BCP, padded_B1P)
            features_CQ = block(coords_BCP, features_CQ, padded_B1P.squeeze(1))
            features_CQ = features_CQ.masked_fill(padded_1Q, 0)
            coords_BCP = _per_jet(features_CQ, batch)
        jet_BC = _per_jet(features_CQ, batch).sum(dim=-1) / counts_B1
        return self.fc(jet_BC)


def _particlenet_from_options(
    model: str,
    num_features: int,
    num_classes: int,
    k: object,
    conv_channels: object,
    fc_dim: object,
    dropout: object,
) -> ParticleNet:
    """Check the searchable options of a ParticleNet variant and build it."""
    num_neighbours = positive_int(model, "k", k)
    blocks = channel_lists(model, "conv_channels", conv_channels)
    fc_width = positive_int(model, "fc_dim", fc_dim)
    rate = dropout_rate(model, "dropout", dropout)
    return ParticleNet(
        num_features,
        num_classes,
        conv_params=[(num_neighbours, channels) for channels in blocks],
        fc_params=[(fc_width, rate)],
    )


def build_particlenet(
    num_features: int,
    num_classes: int,
    *,
    k: int = 16,
    conv_channels: Sequence[Sequence[int]] = PARTICLENET_CONV_CHANNELS,
    fc_dim: int = 256,
    dropout: float = 0.1,
) -> ParticleNet:
    """The full ParticleNet of the paper (366,160 parameters for 7 features, 2 classes)."""
    return _particlenet_from_options(
        "particlenet", num_features, num_classes, k, conv_channels, fc_dim, dropout
    )


def build_particlenet_lite(
    num_features: int,
    num_classes: int,
    *,
    k: int = 7,
    conv_channels: Sequence[Sequence[int]] = PARTICLENET_LITE_CONV_CHANNELS,
    fc_dim: int = 128,
    dropout: float = 0.1,
) -> ParticleNet:
    """ParticleNet-Lite of the paper: two narrower blocks with k=7, for fast trainings."""
    return _particlenet_from_options(
        "particlenet-lite", num_features, num_classes, k, conv_channels, fc_dim, dropout
    )
