"""The batch type every loader yields and the training loop consumes, and the input roles that
say which of its tensors a model takes, in which order.

Models differ in what they read: ParticleNet builds its graph from points, Particle Transformer
needs each particle's Lorentz vector for its pair features, a Particle Flow Network only
features and mask. A model declares its ``InputRoles``; a weaver network file takes every
input group of its data config (``InputGroups``). The data section stages those arrays and the
training loop calls ``model(*batch.model_args(call))``.
"""

from collections.abc import Mapping
from dataclasses import dataclass
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
class InputGroups:
    """The inputs of a weaver network file's forward: every input group of the data config,
    in the config's order, as weaver-core calls ``model(*inputs)``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]
    """(channels, particle slots) of each group, in the order of ``names``."""

    @property
    def call(self) -> str:
        """How the model is called, for messages: 'forward(pf_points, pf_features, ...)'."""
        return f"forward({', '.join(self.names)})"


ModelCall = InputRoles | InputGroups
"""The batch inputs a model's forward takes, in order: roles for zoo models and entry points,
the data config's groups for weaver network files."""


def call_names(call: ModelCall) -> tuple[str, ...]:
    """The JetBatch input names of ``call``, in the order the forward takes them."""
    if isinstance(call, InputGroups):
        return call.names
    return tuple(role.value for role in call.roles)


LABELS = "labels"
"""The batch field of the class indices; every other field is a model input."""


@dataclass(frozen=True)
class JetBatch:
    """One batch of model inputs as torch tensors (B jets, C channels, P particle slots).

    Only the inputs the trial's model takes are loaded, named by role (points, features,
    vectors, mask) or, for a weaver network file, by the data config's input groups.
    """

    inputs: Mapping[str, torch.Tensor]
    """float32 (B, C, P) per input name; a mask is (B, 1, P), 1 for a real particle."""
    labels: torch.Tensor
    """int64 (B,): class index."""

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> "JetBatch":
        """A batch from its fields by name: ``labels`` and the inputs."""
        inputs = {name: tensor for name, tensor in tensors.items() if name != LABELS}
        return cls(inputs=inputs, labels=tensors[LABELS])

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every field by name: the inputs, then ``labels``."""
        return {**self.inputs, LABELS: self.labels}

    def model_args(self, call: ModelCall) -> tuple[torch.Tensor, ...]:
        """The tensors ``call`` names, in order: the positional arguments of the forward."""
        args = []
        for name in call_names(call):
            tensor = self.inputs.get(name)
            if tensor is None:
                raise ValueError(
                    f"the batch has no {name!r} for a model called as {call.call}; "
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
        return JetBatch.from_tensors(moved)
