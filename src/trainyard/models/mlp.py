"""A permutation-invariant MLP baseline: pool the particles, then a plain MLP.

It ignores the particle coordinates on purpose, so it shows how much a graph model gains
from the geometry. Same forward signature as ParticleNet, so trainers need not care.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    C  channels: features per particle
    P  particle slots per jet, padded
    K  classes
"""

import torch
from torch import nn

from trainyard.models._checks import dropout_rate, positive_int
from trainyard.models._masking import real_counts, real_particles


class MLPBaseline(nn.Module):
    """Masked mean and max of the features over real particles, BatchNorm, then an MLP."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_dim: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        pooled_width = 2 * num_features
        # Raw particle features span orders of magnitude; normalising the pooled vector
        # (not the padded particles) keeps padding out of the statistics.
        self.norm = nn.BatchNorm1d(pooled_width)
        layers: list[nn.Module] = []
        width = pooled_width
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self,
        points_BCP: torch.Tensor,
        features_BCP: torch.Tensor,
        mask_B1P: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, K); points_BCP is accepted for a common signature and not used."""
        real_B1P = real_particles(features_BCP, mask_B1P)
        counts_B1 = real_counts(real_B1P, features_BCP.dtype)
        mean_BC = features_BCP.masked_fill(~real_B1P, 0).sum(dim=-1) / counts_B1
        max_BC = features_BCP.masked_fill(~real_B1P, float("-inf")).amax(dim=-1)
        # A jet without real particles would keep -inf; give it the neutral 0 instead.
        max_BC = max_BC.masked_fill(~real_B1P.any(dim=-1), 0)
        return self.mlp(self.norm(torch.cat((mean_BC, max_BC), dim=1)))


def build_mlp(
    num_features: int,
    num_classes: int,
    *,
    hidden_dim: int = 128,
    num_layers: int = 2,
    dropout: float = 0.1,
) -> MLPBaseline:
    """The MLP baseline; num_layers counts the hidden layers."""
    return MLPBaseline(
        num_features,
        num_classes,
        hidden_dim=positive_int("mlp", "hidden_dim", hidden_dim),
        num_layers=positive_int("mlp", "num_layers", num_layers),
        dropout=dropout_rate("mlp", "dropout", dropout),
    )
