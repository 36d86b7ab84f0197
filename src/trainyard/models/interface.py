"""The interface every model trainyard trains implements, and a check that runs it once.

The training loop and validation call each model, zoo or user code, with the tensors of the
input roles it declares (``InputRoles``), in their order; by default (ParticleNet, the MLP,
every user entry point)

    logits_BK = model(points_BCP, features_BCP, mask_B1P)

Particle Transformer takes (features, vectors, mask), a PFN (features, mask). The tensors are
float32 on the training device:
    points_BCP    (B, C_points, P): coordinates of the k-nearest-neighbour graph
                  (C_points = 2, deta and dphi, for the built-in inputs)
    features_BCP  (B, C_features, P): per-particle features (C_features = num_features)
    vectors_B4P   (B, 4, P): Lorentz vectors (px, py, pz, energy), zero in padded slots
    mask_B1P      (B, 1, P): 1 for a real particle, 0 for a padded slot
and the model returns logits_BK, a floating-point (B, num_classes) tensor of unnormalised
class scores: the loss is cross-entropy over the classes and validation takes their softmax,
so the model ends without a softmax. B is the rank's batch, P the particle slots per jet.

A model that breaks this contract would otherwise fail deep inside torch's loss (a (B,) output
gives an error about class probabilities); ``check_model_interface`` runs the built model on a
tiny batch first, so the message names the model, the shapes and the fix.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    C  channels: coordinates or features per particle
    P  particle slots per jet, padded
    K  classes
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trainyard.data.batch import (
    DEFAULT_INPUT_ROLES,
    InputGroups,
    InputRole,
    ModelCall,
    call_names,
)
from trainyard.errors import ModelError
from trainyard.models._tracebacks import user_traceback

# Frames of this module and of nn.Module.__call__, hidden from the user's traceback.
_CALLER_FILES = frozenset({__file__, inspect.getfile(nn.Module)})


def check_model_interface(
    model: nn.Module,
    *,
    name: str,
    num_point_channels: int,
    num_features: int,
    num_particles: int,
    num_classes: int,
    roles: ModelCall = DEFAULT_INPUT_ROLES,
) -> None:
    """Run ``model`` once on a tiny random batch and check it returns (B, num_classes) logits.

    The batch lies on the device of the model's parameters and the call runs in eval mode
    without gradients; afterwards every submodule is back in its own mode, and the global
    random number generators are where they were, so a worker that checks its model trains
    exactly as one that does not.

    Args:
        model: the built model.
        name: how the experiment names it (``model.name``), for the message.
        num_point_channels: C_points, the coordinates per particle.
        num_features: C_features, the features per particle.
        num_particles: P, the particle slots per jet.
        num_classes: K, the classes of the data.
        roles: the inputs the model takes, in order (``input_roles`` of the registry, or
            a network file's input groups, whose shapes replace the sizes above).

    Raises:
        ModelError: the forward cannot take the roles' tensors, raises, or returns anything
            but a floating-point (B, num_classes) tensor; the message says what to change.
    """
    _check_signature(model, name, roles)
    # One jet more than classes, so a (K, B) output cannot pass for (B, K).
    batch = num_classes + 1
    with _side_effect_free(model):
        if isinstance(roles, InputGroups):
            tensors = _tiny_group_batch(batch, roles)
        else:
            tensors = _tiny_batch(batch, num_point_channels, num_features, num_particles)
        device = _device_of(model)
        args = [tensors[name].to(device) for name in call_names(roles)]
        try:
            logits = model(*args)
        except Exception as error:
            *first, last = [f"{name} {_shape(tensors[name])}" for name in call_names(roles)]
            shapes = f"{', '.join(first)} and {last}" if first else last
            raise ModelError(
                f"model '{name}' failed on a test batch of {batch} jets with {shapes} "
                f"(B, C, P); its {roles.call} must accept these shapes "
                f"(see docs/models.md):\n{user_traceback(error, hidden_files=_CALLER_FILES)}"
            ) from error
    _check_logits(logits, name, batch, num_classes)


def _check_signature(model: nn.Module, name: str, roles: ModelCall) -> None:
    """Refuse a forward that cannot be called with the roles' positional tensors."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # no introspectable signature: the call will tell
        return
    names = call_names(roles)
    try:
        signature.bind(*(None for _ in names))
    except TypeError as error:
        source = (
            "one per input group of the data config, in its order"
            if isinstance(roles, InputGroups)
            else "one per input role"
        )
        raise ModelError(
            f"model '{name}': its forward{signature} cannot be called as {roles.call} "
            f"({error}); trainyard calls this model with {len(names)} tensors ({source}), so "
            f"define `def forward(self, {', '.join(names)})` (see docs/models.md)"
        ) from error


def _check_logits(logits: object, name: str, batch: int, num_classes: int) -> None:
    expected = f"logits of shape (B, num_classes) = ({batch}, {num_classes})"
    if not isinstance(logits, torch.Tensor):
        raise ModelError(
            f"model '{name}' returned a {type(logits).__qualname__} for a batch of {batch} "
            f"jets, but must return one tensor: {expected}; return only the logits from "
            "forward"
        )
    if logits.shape != (batch, num_classes):
        raise ModelError(
            f"model '{name}' returned shape {_shape(logits)} for a batch of {batch} jets, but "
            f"must return {expected}: unnormalised class scores, no softmax; "
            f"{_shape_fix(logits, batch, num_classes)} (see docs/models.md)"
        )
    if not logits.is_floating_point():
        raise ModelError(
            f"model '{name}' returned a {logits.dtype} tensor; logits must be floating point "
            "(the raw output of a linear layer, not class indices from argmax)"
        )


def _shape_fix(logits: torch.Tensor, batch: int, num_classes: int) -> str:
    """What to change, judged from the shape the model returned."""
    if logits.shape in ((batch,), (batch, 1)):
        return (
            f"one score per jet is not enough: give the last layer {num_classes} outputs "
            "(e.g. nn.Linear(width, num_classes) with the num_classes your builder receives); "
            "two classes need two logits, not one sigmoid score"
        )
    if logits.ndim == 2 and logits.shape[0] == batch:
        return (
            f"it gives {logits.shape[1]} classes but the data has {num_classes}: build the "
            "last layer with the num_classes argument your builder receives"
        )
    return "return one row of class scores per jet, with the jets along the first dimension"


def _tiny_batch(
    batch: int, num_point_channels: int, num_features: int, num_particles: int
) -> dict[str, torch.Tensor]:
    """Random inputs of every role; jet b has num_particles - b real particles (at least 1),
    so padded slots are present as in real data. Vectors are physical: energy above |p|,
    zero in padded slots, as staged."""
    generator = torch.Generator().manual_seed(0)
    points_BCP = torch.randn(batch, num_point_channels, num_particles, generator=generator)
    features_BCP = torch.randn(batch, num_features, num_particles, generator=generator)
    num_real_B11 = (num_particles - torch.arange(batch)).clamp(min=1).view(batch, 1, 1)
    mask_B1P = (torch.arange(num_particles).view(1, 1, -1) < num_real_B11).float()
    momenta_B3P = 10 * torch.randn(batch, 3, num_particles, generator=generator)
    energy_B1P = 1.1 * momenta_B3P.norm(dim=1, keepdim=True)
    vectors_B4P = torch.cat((momenta_B3P, energy_B1P), dim=1) * mask_B1P
    return {
        InputRole.POINTS.value: points_BCP,
        InputRole.FEATURES.value: features_BCP,
        InputRole.VECTORS.value: vectors_B4P,
        InputRole.MASK.value: mask_B1P,
    }


def _tiny_group_batch(batch: int, groups: InputGroups) -> dict[str, torch.Tensor]:
    """Random inputs of every group of a network file's data config, padded as
    ``_tiny_batch``'s: a one-variable group is taken for a mask (1 for real particles),
    every other group is random in its real slots and zero in its padded ones."""
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (channels, length) in zip(groups.names, groups.shapes, strict=True):
        num_real_B11 = (length - torch.arange(batch)).clamp(min=1).view(batch, 1, 1)
        mask_B1P = (torch.arange(length).view(1, 1, -1) < num_real_B11).float()
        if channels == 1:
            tensors[name] = mask_B1P
        else:
            tensors[name] = torch.randn(batch, channels, length, generator=generator) * mask_B1P
    return tensors


@contextmanager
def _side_effect_free(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; each submodule's mode and the RNGs restored after."""
    modes = [(module, module.training) for module in model.modules()]
    device = _device_of(model)
    cuda_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            model.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))
