"""Learning-rate schedules as pure functions of the step; the weight-decay groups."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainyard.config.schema import LRScheduleSpec, OptimizerSpec
from trainyard.models import build_model
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
    optimizer = build_optimizer(model, spec, lr=0.05)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    assert optimizer.param_groups[1]["weight_decay"] == 0.0, "the bias is not decayed"
    if name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.5
    schedule = build_lr_schedule(optimizer, LRScheduleSpec(warmup_batches=2), total_batches=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def _no_decay_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    return {
        id(p)
        for group in optimizer.param_groups
        if group["weight_decay"] == 0
        for p in group["params"]
    }


def test_weight_decay_skips_what_weaver_core_skips_for_the_particle_transformer() -> None:
    """Biases, norm scales and the class token get no decay, as weaver-core's own optimizer
    set-up (train.init_opt) groups them; every other weight gets the spec's."""
    from weaver.train import init_opt

    model = build_model(
        "particle-transformer",
        num_features=7,
        num_classes=2,
        options={"embed_dims": [16, 16], "pair_embed_dims": [8], "num_heads": 2},
    )
    ours = build_optimizer(model, OptimizerSpec(name="adamw", weight_decay=0.01), lr=1e-3)
    args = SimpleNamespace(
        start_lr=1e-3, optimizer="adamw", load_epoch=None, lr_finder="skip the scheduler"
    )
    weavers, _ = init_opt(args, model, weight_decay=0.01)
    skipped = _no_decay_ids(ours)
    assert skipped == _no_decay_ids(weavers)
    assert id(model.cls_token) in skipped
    decayed = [p for g in ours.param_groups if g["weight_decay"] == 0.01 for p in g["params"]]
    assert decayed and all(p.ndim >= 2 for p in decayed)


def test_no_weight_decay_names_are_skipped_and_zero_decay_is_one_group() -> None:
    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(3, 4)
            self.scale = torch.nn.Parameter(torch.ones(4, 4))

        def no_weight_decay(self) -> set[str]:
            return {"scale"}

    model = Tagger()
    optimizer = build_optimizer(model, OptimizerSpec(name="sgd", weight_decay=0.1), lr=0.1)
    assert _no_decay_ids(optimizer) == {id(model.scale), id(model.embed.bias)}
    plain = build_optimizer(model, OptimizerSpec(name="adam", weight_decay=0.0), lr=0.1)
    assert len(plain.param_groups) == 1 and len(plain.param_groups[0]["params"]) == 3
