"""Optimizer and learning-rate schedule from a trial's resolved config."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from trainyard.config.schema import LRScheduleSpec, OptimizerSpec

NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "mask_token", "register_token"})
"""Token parameters that weight decay leaves alone (weaver-core's and timm's list)."""


def build_optimizer(model: nn.Module, spec: OptimizerSpec, *, lr: float) -> torch.optim.Optimizer:
    """adam, adamw or sgd (with momentum) over ``model``'s trainable parameters, as the
    trial's config resolved them; `lr` is the spec's, possibly scaled with the number of ranks.

    Weight decay is applied as weaver-core (and timm) apply it: not to biases, 1-D parameters
    (norm scales), the tokens of ``NO_DECAY_NAMES`` (ParT's class token) or the names the
    model's ``no_weight_decay()`` returns, which then form a second group with no decay.
    """
    groups = _parameter_groups(model, spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(groups, lr=lr, weight_decay=spec.weight_decay, momentum=spec.momentum)


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """One group with the spec's decay, and one with none for the parameters decay skips."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if weight_decay == 0:
        return [{"params": [p for _, p in named]}]
    marked = getattr(model, "no_weight_decay", None)
    skipped_names = set(marked()) if callable(marked) else set()
    decay, no_decay = [], []
    for name, parameter in named:
        skip = (
            parameter.ndim <= 1
            or name.endswith(".bias")
            or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
            or name in skipped_names
        )
        (no_decay if skip else decay).append(parameter)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


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
