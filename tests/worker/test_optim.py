"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import pytest
import torch

from trainyard.config.schema import LRScheduleSpec, OptimizerSpec
from trainyard.worker.optim import build_lr_schedule, build_optimizer, lr_multiplier


def test_warmup_is_linear_then_constant() -> None:
    spec = LRScheduleSpec(name="constant", warmup_batches=4)
    assert [lr_multiplier(s, spec, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_reaches_its_floor_at_the_end() -> None:
    spec = LRScheduleSpec(name="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(0, spec, 100) == pytest.approx(1.0)
    assert lr_multiplier(50, spec, 100) == pytest.approx(0.55)
    assert lr_multiplier(100, spec, 100) == pytest.approx(0.1)


def test_step_decay() -> None:
    spec = LRScheduleSpec(name="step", step_every_batches=10, gamma=0.5)
    assert [lr_multiplier(s, spec, 100) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_take_the_given_lr_and_the_spec_settings(name: str) -> None:
    model = torch.nn.Linear(2, 2)
    spec = OptimizerSpec(name=name, lr=0.001, weight_decay=0.01, momentum=0.5)
    optimizer = build_optimizer(model.parameters(), spec, lr=0.05)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.5
    schedule = build_lr_schedule(optimizer, LRScheduleSpec(warmup_batches=2), total_batches=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
