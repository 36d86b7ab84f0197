"""The batch type every loader yields and the training loop consumes."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class JetBatch:
    """One batch of model inputs as torch tensors (B jets, C channels, P particle slots)."""

    points: torch.Tensor
    """float32 (B, C, P): coordinates of the k-nearest-neighbour graph."""
    features: torch.Tensor
    """float32 (B, C, P): per-particle features."""
    mask: torch.Tensor
    """float32 (B, 1, P): 1 for real particles, 0 for padding."""
    labels: torch.Tensor
    """int64 (B,): class index."""

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> "JetBatch":
        """Move every tensor to ``device``; non_blocking overlaps copies from pinned memory."""
        return JetBatch(
            points=self.points.to(device, non_blocking=non_blocking),
            features=self.features.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )
