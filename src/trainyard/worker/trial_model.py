"""The trial's model on this rank: built from its config (zoo, entry point or weaver network
file), checked against the staged inputs, wrapped for its ranks (DDP or FSDP), with the loss
it trains with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainyard.config.trial import TrialConfig
from trainyard.data.batch import InputGroups
from trainyard.models import build_loss, build_model, check_model_interface
from trainyard.worker import parallel
from trainyard.worker.data import TrialData
from trainyard.worker.distributed import World

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrialModel:
    """What the training loop trains and validates."""

    model: torch.nn.Module
    """The model as trained: itself on one rank, DDP- or FSDP-wrapped on several."""
    eval_model: torch.nn.Module
    """The unwrapped model, for validation and checkpoints."""
    strategy: parallel.Strategy
    loss: Loss | None
    """A network file's get_loss (on the device); None: cross entropy."""


def build_trial_model(
    config: TrialConfig, data: TrialData, device: torch.device, world: World
) -> TrialModel:
    """Build the model with the options the trial's config resolved, run it once on the
    staged inputs' shapes, and parallelize it over the trial's ranks."""
    name = config.model.name
    network_config = data.inputs.network_config()
    model = build_model(
        name,
        num_features=data.inputs.num_features,
        num_classes=data.inputs.num_classes,
        options=config.model.options,
        data_config=network_config,
    ).to(device)
    _check_interface(model, name, data)
    loss = build_loss(name, options=config.model.options, data_config=network_config)
    strategy = _choose_strategy(model, config, device, world)
    wrapped = parallel.parallelize(
        model,
        strategy=strategy,
        device=device,
        world_size=world.size,
        sync_batchnorm=config.training.sync_batchnorm,
    )
    return TrialModel(
        model=wrapped,
        eval_model=parallel.unwrap(wrapped),
        strategy=strategy,
        loss=loss.to(device) if loss is not None else None,
    )


def _choose_strategy(
    model: torch.nn.Module, config: TrialConfig, device: torch.device, world: World
) -> parallel.Strategy:
    resources = config.resources
    strategy = parallel.choose_strategy(
        resources.strategy,
        world_size=world.size,
        needed_bytes=parallel.training_memory_bytes(model, config.training.optimizer.name),
        budget_bytes=resources.fsdp_memory_fraction
        * parallel.device_memory_bytes(device, world.local_size),
    )
    # All ranks must wrap alike; under auto, machines with less memory could disagree.
    return "fsdp" if world.any(strategy == "fsdp")[0] else strategy


def _check_interface(model: torch.nn.Module, name: str, data: TrialData) -> None:
    """Run the model once on a batch shaped like the staged inputs it takes, so a model
    that breaks the interface fails with a message naming it, not deep inside the loss."""
    specs, fields, call = data.train.specs, data.inputs.fields, data.inputs.call
    points = fields.get("points")
    check_model_interface(
        model,
        name=name,
        num_point_channels=specs[points].shape[0] if points is not None else 2,
        num_features=data.inputs.num_features,
        # A network file's groups carry their own shapes.
        num_particles=0 if isinstance(call, InputGroups) else specs[fields["features"]].shape[1],
        num_classes=data.inputs.num_classes,
        roles=call,
    )
