"""The padding convention shared by every zoo model.

Jets are padded to a common number of particle slots P; mask_B1P is 1 (or True) for a real
particle and 0 for a padded slot, as in weaver-core. A missing mask means every slot is real.
"""

import torch


def real_particles(features_BCP: torch.Tensor, mask_B1P: torch.Tensor | None) -> torch.Tensor:
    """Return a bool (B, 1, P) mask of real particles, checking it lines up with the features."""
    if mask_B1P is None:
        return torch.ones_like(features_BCP[:, :1], dtype=torch.bool)
    batch, _, points = features_BCP.shape
    if mask_B1P.shape != (batch, 1, points):
        raise ValueError(
            f"mask must have shape (batch, 1, particles) = ({batch}, 1, {points}) to match the "
            f"features, got {tuple(mask_B1P.shape)}"
        )
    return mask_B1P.bool()


def real_counts(real_B1P: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Number of real particles per jet as (B, 1), at least 1 so that empty jets average to 0."""
    return real_B1P.to(dtype).sum(dim=-1).clamp(min=1)
