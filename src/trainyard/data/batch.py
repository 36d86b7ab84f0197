"""The batch type every loader yields and the training loop consumes, and the input roles that
say which of its tensors a model takes, in which order.

Models differ in what they read: ParticleNet builds its graph from points, Particle Transformer
needs each particle's Lorentz vector for its pair features, a Particle Flow Network only
features and mask. A model declares its ``InputRoles``; the data section stages those arrays
and the training loop calls ``model(*batch.model_args(roles))``.
"""

from dataclasses import dataclass, fields
from enum import StrEnum

import torch


class InputRole(StrEnum):
    """One per-particle input a model may take; the value is the JetBatch field."""

    POINTS = "points"
    """(B, C, P) coordinates of the k-nearest-neighbour graph."""
    FEATURES = "features"
    """(B, C, P) per-particle features; C is the model's num_features."""
    VECTORS = "vectors"
    """(B, 4, P) Lorentz vectors (px, py, pz, energy), zero in padded slots."""
    MASK = "mask"
    """(B, 1, P) 1 for a real particle, 0 for a padded slot."""


NUM_VECTOR_COMPONENTS = 4
"""px, py, pz, energy."""


@dataclass(frozen=True)
class InputRoles:
    """The inputs a model's forward takes, in order; features and mask are always among them."""

    roles: tuple[InputRole, ...]

    def __post_init__(self) -> None:
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"input roles repeat: {self.call}")
        missing = {InputRole.FEATURES, InputRole.MASK} - set(self.roles)
        if missing:
            raise ValueError(f"input roles {self.call} lack {sorted(missing)}")

    def __contains__(self, role: object) -> bool:
        return role in self.roles

    @property
    def call(self) -> str:
        """How the model is called, for messages: 'forward(points, features, mask)'."""
        return f"forward({', '.join(role.value for role in self.roles)})"


DEFAULT_INPUT_ROLES = InputRoles((InputRole.POINTS, InputRole.FEATURES, InputRole.MASK))
"""What ParticleNet, the MLP and every user entry point take."""


@dataclass(frozen=True)
class JetBatch:
    """One batch of model inputs as torch tensors (B jets, C channels, P particle slots).

    Only the inputs the trial's model takes are loaded: points and vectors may be None.
    """

    features: torch.Tensor
    """float32 (B, C, P): per-particle features."""
    mask: torch.Tensor
    """float32 (B, 1, P): 1 for real particles, 0 for padding."""
    labels: torch.Tensor
    """int64 (B,): class index."""
    points: torch.Tensor | None = None
    """float32 (B, C, P): coordinates of the k-nearest-neighbour graph."""
    vectors: torch.Tensor | None = None
    """float32 (B, 4, P): (px, py, pz, energy) per particle, zero in padded slots."""

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every loaded field by name (those that are not None)."""
        named = ((field.name, getattr(self, field.name)) for field in fields(self))
        return {name: tensor for name, tensor in named if tensor is not None}

    def model_args(self, roles: InputRoles) -> tuple[torch.Tensor, ...]:
        """The tensors of ``roles`` in order, the positional arguments of the model's forward."""
        args = []
        for role in roles.roles:
            tensor = getattr(self, role.value)
            if tensor is None:
                raise ValueError(
                    f"the batch has no {role.value!r} for a model called as {roles.call}; "
                    "the loader's fields must include it"
                )
            args.append(tensor)
        return tuple(args)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> "JetBatch":
        """Move every tensor to ``device``; non_blocking overlaps copies from pinned memory."""
        moved = {
            name: tensor.to(device, non_blocking=non_blocking)
            for name, tensor in self.tensors().items()
        }
        return JetBatch(**moved)
