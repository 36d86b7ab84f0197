"""Particle Flow Network (PFN, arXiv:1810.05165): a per-particle network, a sum, a jet network.

The Energy Flow Network paper's permutation-invariant form f(sum_i Phi(p_i)): Phi maps each
particle's features to a latent vector, the latent vectors of the jet's real particles are
summed, and F classifies the sum. Default sizes are the paper's published ones: Phi (100, 100,
256) and F (100, 100, 100), ReLU throughout; the last layer gives logits (the loss applies the
softmax). It takes only features and mask (``PFN_ROLES``): no coordinates, no Lorentz vectors.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    C  channels: features per particle, then Phi's widths
    P  particle slots per jet, padded
    L  latent width (Phi's last)
    K  classes
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainyard.data.batch import InputRole, InputRoles
from trainyard.models._checks import dropout_rate, int_list
from trainyard.models._masking import real_particles

PFN_ROLES = InputRoles((InputRole.FEATURES, InputRole.MASK))
_NAME = "pfn"


class ParticleFlowNetwork(nn.Module):
    """forward(features (B, C, P), mask (B, 1, P)) -> logits (B, K)."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        *,
        phi_sizes: tuple[int, ...],
        f_sizes: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        phi: list[nn.Module] = []
        width = num_features
        for out in phi_sizes:
            # A 1x1 convolution is one dense layer applied to every particle alike.
            phi += [nn.Conv1d(width, out, 1), nn.ReLU()]
            width = out
        self.phi = nn.Sequential(*phi)
        f: list[nn.Module] = []
        for out in f_sizes:
            f += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        f.append(nn.Linear(width, num_classes))
        self.f = nn.Sequential(*f)

    def forward(
        self, features_BCP: torch.Tensor, mask_B1P: torch.Tensor | None = None
    ) -> torch.Tensor:
        real_B1P = real_particles(features_BCP, mask_B1P)
        # Phi of a padded slot is not zero (biases): only real particles enter the sum.
        latent_BL = (self.phi(features_BCP) * real_B1P).sum(dim=-1)
        return self.f(latent_BL)


def build_pfn(
    num_features: int,
    num_classes: int,
    *,
    phi_sizes: Sequence[int] = (100, 100, 256),
    f_sizes: Sequence[int] = (100, 100, 100),
    dropout: float = 0.0,
) -> ParticleFlowNetwork:
    """A PFN with the paper's sizes by default; dropout applies after each F layer."""
    return ParticleFlowNetwork(
        num_features,
        num_classes,
        phi_sizes=int_list(_NAME, "phi_sizes", phi_sizes),
        f_sizes=int_list(_NAME, "f_sizes", f_sizes, allow_empty=True),
        dropout=dropout_rate(_NAME, "dropout", dropout),
    )
