"""Optimizer and learning-rate schedule from a trial's resolved config."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from trainyard.config.schema import LRScheduleSpec, OptimizerSpec


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], spec: OptimizerSpec, *, lr: float
) -> torch.optim.Optimizer:
    """adam, adamw or sgd (with momentum) as the trial's config resolved them; `lr` is the
    spec's, possibly scaled with the number of ranks."""
    if spec.name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        parameters, lr=lr, weight_decay=spec.weight_decay, momentum=spec.momentum
    )


def lr_multiplier(step: int, spec: LRScheduleSpec, total_batches: int) -> float:
    """Factor on the base lr after `step` optimizer steps: linear warm-up, then the decay."""
    if step < spec.warmup_batches:
        return (step + 1) / spec.warmup_batches
    if spec.name == "constant":
        return 1.0
    if spec.name == "step":
        return spec.gamma ** ((step - spec.warmup_batches) // spec.step_every_batches)
    decay_steps = max(1, total_batches - spec.warmup_batches)
    progress = min(1.0, (step - spec.warmup_batches) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * cosine


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, spec: LRScheduleSpec, *, total_batches: int
) -> LambdaLR:
    """A LambdaLR over `lr_multiplier`, stepped once per optimizer step."""
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, spec, total_batches))
