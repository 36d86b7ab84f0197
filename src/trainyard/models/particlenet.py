"""ParticleNet (arXiv:1902.08570): a dynamic graph CNN over the particles of a jet.

Each EdgeConv block finds the k nearest neighbours of every particle (in the input coordinates
for the first block, in the previous block's features afterwards), applies a shared MLP to the
edge features (x_i, x_j - x_i), averages over the neighbours and adds a shortcut. The jet is
then summarised by averaging over its real particles and classified by fully connected layers.

Written from the paper for trainyard. Module and parameter names follow weaver-core's
ParticleNet (without fusion) so that its state_dict loads here with strict=True.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    C  channels: coordinates or features per particle (the width changes from layer to layer)
    P  particle slots per jet, padded
    N  nearest neighbours per particle (the k of kNN)
    K  classes
"""

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from trainyard.errors import ModelError
from trainyard.models._checks import channel_lists, dropout_rate, positive_int
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


def gather_neighbours(features_BCP: torch.Tensor, neighbours_BPN: torch.Tensor) -> torch.Tensor:
    """Features (B, C, P, N) of every particle's neighbours, via one gather along P."""
    batch, channels, points = features_BCP.shape
    num_neighbours = neighbours_BPN.shape[-1]
    flat_index = neighbours_BPN.reshape(batch, 1, points * num_neighbours)
    flat_index = flat_index.expand(batch, channels, points * num_neighbours)
    return features_BCP.gather(2, flat_index).view(batch, channels, points, num_neighbours)


def _moved_out_of_reach(coords_BCP: torch.Tensor, padded_B1P: torch.Tensor) -> torch.Tensor:
    """Coordinates with padded slots at PADDED_COORDINATE, in at least float32.

    Under float16 autocast the features used as coordinates are float16, where 1e9 is inf.
    """
    coords_BCP = coords_BCP.to(torch.promote_types(coords_BCP.dtype, torch.float32))
    return coords_BCP.masked_fill(padded_B1P, PADDED_COORDINATE)


class EdgeConv(nn.Module):
    """One EdgeConv block: kNN graph, shared edge MLP, mean over neighbours, shortcut, ReLU."""

    def __init__(self, k: int, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.k = k
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

    def forward(self, coords_BCP: torch.Tensor, features_BCP: torch.Tensor) -> torch.Tensor:
        """New features (B, C_out, P); neighbours are searched in coords_BCP."""
        points = coords_BCP.shape[-1]
        if points <= self.k:
            raise ModelError(
                f"EdgeConv with k={self.k} needs more than {self.k} particle slots per jet, "
                f"got {points}; pad the inputs to at least {self.k + 1} particles or lower k"
            )
        neighbours_BPN = nearest_neighbours(coords_BCP, self.k)
        neighbour_features_BCPN = gather_neighbours(features_BCP, neighbours_BPN)
        centre_features_BCPN = features_BCP.unsqueeze(-1).expand_as(neighbour_features_BCPN)
        edges_BCPN = torch.cat(
            (centre_features_BCPN, neighbour_features_BCPN - centre_features_BCPN), dim=1
        )
        for conv, bn in zip(self.convs, self.bns, strict=True):
            edges_BCPN = torch.relu(bn(conv(edges_BCPN)))
        messages_BCP = edges_BCPN.mean(dim=-1)
        shortcut_BCP = features_BCP if self.sc is None else self.sc_bn(self.sc(features_BCP))
        return torch.relu(shortcut_BCP + messages_BCP)


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
        counts_B1 = real_counts(real_B1P, features_BCP.dtype)
        # The input BatchNorm sees padded slots too, as weaver's does; they are zeroed after.
        features_BCP = self.bn_fts(features_BCP).masked_fill(padded_B1P, 0)
        coords_BCP = points_BCP
        for block in self.edge_convs:
            coords_BCP = _moved_out_of_reach(coords_BCP, padded_B1P)
            features_BCP = block(coords_BCP, features_BCP).masked_fill(padded_B1P, 0)
            coords_BCP = features_BCP
        jet_BC = features_BCP.sum(dim=-1) / counts_B1
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
