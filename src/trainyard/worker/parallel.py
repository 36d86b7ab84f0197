"""Parallelisms as functions the Trainer composes: choose a strategy, convert BatchNorm, wrap.

`choose_strategy` is pure (numbers in, a name out) so it can be tested without a process
group; the `apply_*` functions change or wrap the model and return what the loop trains.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from trainyard.errors import ConfigError
from trainyard.worker.sync_batchnorm import convert_cpu_sync_batchnorm

logger = logging.getLogger(__name__)

Strategy = Literal["single", "ddp", "fsdp"]

# Optimizer state kept per parameter, in parameter-sized tensors: Adam keeps two moments.
_OPTIMIZER_STATE_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}


def training_memory_bytes(model: nn.Module, optimizer_name: str) -> int:
    """Parameters + gradients + optimizer state, the part of training memory FSDP shards.

    Activations are left out: they depend on the batch and are not sharded by FSDP either.
    """
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return param_bytes * (1 + 1 + _OPTIMIZER_STATE_COPIES[optimizer_name])


def device_memory_bytes(device: torch.device, num_local_ranks: int) -> int:
    """Memory one rank may count on: the GPU's, or on CPU a notional share of the RAM.

    CPU ranks share the machine's RAM, so each is credited total RAM / ranks on the machine.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total_ram // max(1, num_local_ranks)


def choose_strategy(
    requested: str, *, world_size: int, needed_bytes: int, budget_bytes: float
) -> Strategy:
    """ddp or fsdp as asked; auto picks fsdp only when the replicated state would not fit.

    One rank has nothing to split: it trains the model as is, whatever was asked.
    """
    if world_size == 1:
        if requested == "fsdp":
            logger.warning(
                "resources.strategy: fsdp has no effect on a trial with one slot; "
                "training unsharded (checkpoints are written whole)"
            )
        return "single"
    if requested in ("ddp", "fsdp"):
        return requested  # type: ignore[return-value]
    chosen: Strategy = "fsdp" if needed_bytes > budget_bytes else "ddp"
    logger.info(
        "resources.strategy auto: parameters, gradients and optimizer state need %.3g MiB "
        "per replica, the budget (fsdp_memory_fraction of one rank's memory) is %.3g MiB: %s",
        needed_bytes / 2**20,
        budget_bytes / 2**20,
        chosen,
    )
    return chosen


def rank_batch_size(global_batch_size: int, world_size: int, *, key: str) -> int:
    """Each rank's share of the global batch (`key` names where it was set)."""
    if global_batch_size % world_size:
        raise ConfigError(
            [
                f"`{key}`: the global batch of {global_batch_size} does not split evenly over "
                f"the {world_size} ranks of this trial (resources.slots_per_trial: "
                f"{world_size}); choose a multiple of {world_size}, or another number of slots"
            ],
            source="trial settings",
        )
    return global_batch_size // world_size


def lr_scale(rule: str, world_size: int) -> float:
    """training.scale_lr: none, linear (x ranks) or sqrt (x sqrt(ranks))."""
    return {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[rule]


def parallelize(
    model: nn.Module,
    *,
    strategy: Strategy,
    device: torch.device,
    world_size: int,
    sync_batchnorm: bool,
) -> nn.Module:
    """Compose the parallelisms in their order: SyncBatchNorm first (DDP and FSDP must see
    the final modules), then the data-parallel wrapper."""
    if strategy == "single":
        return model
    if sync_batchnorm:
        model = apply_sync_batchnorm(model, device)
    if strategy == "fsdp":
        return apply_fsdp(model, device, world_size)
    return apply_ddp(model, device)


def apply_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: torch's SyncBatchNorm on GPUs, and on CPU (where
    torch has no kernel for it) trainyard's, which all-reduces the statistics through gloo."""
    if device.type == "cpu":
        return convert_cpu_sync_batchnorm(model)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def apply_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Replicas that average their gradients in backward (the default for small models)."""
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def apply_fsdp(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """FSDP2: shard each top-level block, then the root (which takes the leftovers).

    Blocks are the model's children; a ModuleList or ModuleDict has no forward of its own
    (its hooks would never run), so its items are sharded instead. The model is sharded in
    place and keeps its class, so state dict keys do not change.
    """
    mesh = init_device_mesh(device.type, (world_size,))
    for block in _blocks(model):
        if any(True for _ in block.parameters()):
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as DDP does at each forward.

    FSDP shards parameters but leaves buffers to each rank, where they drift apart on
    different data; validation and checkpoints should see one model.
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper: validation calls it without DDP's syncing."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, nn.ModuleList):
            blocks.extend(child)
        elif isinstance(child, nn.ModuleDict):
            blocks.extend(child.values())
        else:
            blocks.append(child)
    return blocks
