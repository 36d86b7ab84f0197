"""Packed trials train exactly as the same trials trained one by one.

The reference is the solo loop as `worker.trainer.Trainer` runs it: the model built right after
`torch.manual_seed(training.seed)`, the trial's optimizer and LR schedule, then per batch
forward, cross entropy, backward, clip, step, schedule step, zero_grad. Both see the same
batches; the pack must end with the same weights, BatchNorm statistics and optimizer state,
within float tolerance (vmap orders some sums differently).

A pack's ParticleNet computes every edge (its MemberBatchNorm is not a plain BatchNorm, so the
idle padded edges are not counted as one column), while a solo trial skips the idle ones: the
same math, rounded differently. So the solo reference here computes every edge too
(`set_idle_edge_skipping`), and these tests check the packing alone; that skipping trains as
computing every edge is tests/models/test_particlenet.py's to check (docs/packing.md,
"Exactness").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from trainyard.config import parse_experiment
from trainyard.config.schema import OptimizerSpec
from trainyard.config.trial import TrialConfig, resolve_trial
from trainyard.data.batch import JetBatch
from trainyard.errors import ModelError
from trainyard.models import build_model
from trainyard.models.particlenet import set_idle_edge_skipping
from trainyard.worker.optim import build_lr_schedule, build_optimizer
from trainyard.worker.packing import PackedModels, PackMember, build_member

NUM_FEATURES, NUM_CLASSES, PARTICLES, BATCH = 7, 2, 16, 8
TOTAL_BATCHES = 4
CPU = torch.device("cpu")
TRIALS = [
    {"lr": 0.01, "weight_decay": 0.0, "seed": 1},
    {"lr": 0.003, "weight_decay": 0.05, "seed": 2},
    {"lr": 0.03, "weight_decay": 0.01, "seed": 3},
]


@pytest.fixture(autouse=True)
def _deterministic() -> Iterator[None]:
    """As the Trainer runs by default (training.deterministic)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _trial(model: str, optimizer: str, hyperparameters: dict[str, Any]) -> TrialConfig:
    experiment = parse_experiment(
        {
            "name": "pack",
            "model": {"name": model, "options": {"dropout": 0.0}},
            "data": {"train": "a", "val": "b"},
            "training": {
                "max_length": {"batches": TOTAL_BATCHES},
                "optimizer": {"name": optimizer, "momentum": 0.8},
                "lr_schedule": {"name": "cosine", "warmup_batches": 2},
                "grad_clip_norm": 5.0,
            },
        }
    )
    return resolve_trial(experiment, hyperparameters)


def _batches(seed: int, count: int, batch: int = BATCH) -> list[JetBatch]:
    """Jets with a varying number of real particles, so padding is exercised."""
    generator = torch.Generator().manual_seed(seed)
    found = []
    for _ in range(count):
        num_real = torch.randint(3, PARTICLES + 1, (batch, 1, 1), generator=generator)
        mask = (torch.arange(PARTICLES).view(1, 1, -1) < num_real).float()
        found.append(
            JetBatch(
                inputs={
                    "points": torch.randn(batch, 2, PARTICLES, generator=generator) * mask,
                    "features": torch.randn(batch, NUM_FEATURES, PARTICLES, generator=generator)
                    * mask,
                    "mask": mask,
                },
                labels=torch.randint(0, NUM_CLASSES, (batch,), generator=generator),
            )
        )
    return found


def _member(key: str, config: TrialConfig) -> PackMember:
    return build_member(
        key,
        config,
        num_features=NUM_FEATURES,
        num_classes=NUM_CLASSES,
        total_batches=TOTAL_BATCHES,
        device=CPU,
    )


def _solo(
    config: TrialConfig, batches: list[JetBatch], *, skip: frozenset[int] = frozenset()
) -> PackMember:
    """The trial trained alone, as the Trainer builds and steps it, computing every edge as
    the pack does (see the module docstring); the updates of the batches numbered in `skip`
    are dropped after their forward and backward, as its non-finite-loss policy drops them."""
    training = config.training
    torch.manual_seed(training.seed)
    model = build_model(
        config.model.name,
        num_features=NUM_FEATURES,
        num_classes=NUM_CLASSES,
        options=config.model.options,
    )
    set_idle_edge_skipping(model, enabled=False)
    optimizer = build_optimizer(model, training.optimizer, lr=training.optimizer.lr)
    schedule = build_lr_schedule(optimizer, training.lr_schedule, total_batches=TOTAL_BATCHES)
    model.train()
    for index, batch in enumerate(batches):
        loss = F.cross_entropy(
            model(batch.inputs["points"], batch.inputs["features"], batch.inputs["mask"]).float(),
            batch.labels,
        )
        loss.backward()
        if index in skip:
            optimizer.zero_grad(set_to_none=True)
            continue
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return PackMember(key="solo", model=model, optimizer=optimizer, lr_schedule=schedule)


def _assert_same_training(packed: PackMember, solo: PackMember) -> None:
    """Weights and BatchNorm statistics, optimizer state and schedule position.

    A packed forward agrees with the solo one to about 1e-7 (vmap sums in another order) and
    SGD passes that on as is: every element must agree closely. Adam divides each gradient by
    its own root mean square, so an element whose gradient has cancelled down to about eps
    carries the rounding noise into ~1e-3 of its step, and the later steps spread it (seen:
    ParticleNet-Lite, Adam at lr 0.03, 4 steps: up to 4.5e-3 apart in a few elements). So the
    ParticleNet-Lite comparisons use SGD, and with Adam (MLP) 99.5% of the elements must agree
    closely and all within 5% of lr.
    """
    adaptive = isinstance(solo.optimizer, torch.optim.Adam | torch.optim.AdamW)
    packed_state, solo_state = packed.model.state_dict(), solo.model.state_dict()
    assert packed_state.keys() == solo_state.keys()
    for name, tensor in solo_state.items():
        _assert_close(name, packed_state[name], tensor, solo.optimizer.defaults["lr"], adaptive)
    packed_opt, solo_opt = packed.optimizer.state_dict(), solo.optimizer.state_dict()
    assert packed_opt["param_groups"] == solo_opt["param_groups"]
    for index, state in solo_opt["state"].items():
        for name, value in state.items():
            # exp_avg and momentum are gradient-sized: judged against the largest of them.
            scale = float(value.abs().max()) if value.is_floating_point() else 0.0
            _assert_close(
                f"optimizer {index} {name}",
                packed_opt["state"][index][name],
                value,
                1e-3 * scale,
                adaptive,
            )
    assert packed.lr_schedule is not None and solo.lr_schedule is not None
    assert packed.lr_schedule.state_dict() == solo.lr_schedule.state_dict()


def _assert_close(
    name: str, packed: torch.Tensor, solo: torch.Tensor, step: float, adaptive: bool
) -> None:
    """Close elementwise (atol 1e-5, rtol 1e-4); with an adaptive optimizer, 99.5% close
    and every element within 5% of `step` (see _assert_same_training)."""
    packed, solo = packed.double(), solo.double()
    close = torch.isclose(packed, solo, rtol=1e-4, atol=1e-5)
    if not adaptive:
        assert bool(close.all()), f"{name}: {(packed - solo).abs().max():.3g} apart"
        return
    assert float(close.double().mean()) >= 0.995, f"{name}: {int((~close).sum())} apart"
    worst = float((packed - solo).abs().max()) if packed.numel() else 0.0
    assert worst <= 1e-5 + 0.05 * step, f"{name}: {worst:.3g} apart"


@pytest.mark.parametrize(
    ("model", "optimizer"), [("particlenet-lite", "sgd"), ("mlp", "adamw"), ("mlp", "sgd")]
)
def test_packed_trials_end_as_the_same_trials_trained_one_by_one(
    model: str, optimizer: str
) -> None:
    configs = [_trial(model, optimizer, values) for values in TRIALS]
    streams = [_batches(100 + i, TOTAL_BATCHES) for i in range(len(configs))]
    pack = PackedModels(device=CPU)
    for index, config in enumerate(configs):
        pack.join(_member(str(index), config))
    for step in range(TOTAL_BATCHES):
        losses = pack.train_step({str(i): stream[step] for i, stream in enumerate(streams)})
        assert sorted(losses) == ["0", "1", "2"]
    for index, config in enumerate(configs):
        _assert_same_training(pack.member(str(index)), _solo(config, streams[index]))


def test_a_member_leaving_and_another_joining_leave_the_others_untouched() -> None:
    """C leaves after 2 steps, D joins then (at its own step 0, so the members are at
    different steps of their schedules), and D's short batches run as a group of their own.
    B and D drop (each its own masks, from its own generator: tests/worker/test_packing_rng.py)."""
    configs = {key: _trial("particlenet-lite", "sgd", TRIALS[i]) for i, key in enumerate("AC")}
    configs["B"] = _trial("particlenet-lite", "sgd", {**TRIALS[1], "dropout": 0.3})
    configs["D"] = _trial("particlenet-lite", "sgd", {"lr": 0.02, "seed": 4, "dropout": 0.5})
    streams = {key: _batches(200 + i, TOTAL_BATCHES) for i, key in enumerate("ABC")}
    streams["D"] = _batches(300, TOTAL_BATCHES - 2, batch=5)
    pack = PackedModels(device=CPU)
    for key in "ABC":
        pack.join(_member(key, configs[key]))
    for step in range(TOTAL_BATCHES):
        if step == 2:
            left = pack.leave("C")
            pack.join(_member("D", configs["D"]))
        present = {key: streams[key][step - (2 if key == "D" else 0)] for key in pack.keys}
        pack.train_step(present)
    assert pack.keys == ["A", "B", "D"]
    for key in "ABD":
        _assert_same_training(pack.member(key), _solo(configs[key], streams[key]))
    _assert_same_training(left, _solo(configs["C"], streams["C"][:2]))


@pytest.mark.parametrize(("model", "optimizer"), [("particlenet-lite", "sgd"), ("mlp", "adamw")])
def test_members_sharing_one_batch_train_as_alone(model: str, optimizer: str) -> None:
    configs = [_trial(model, optimizer, values) for values in TRIALS]
    shared = _batches(7, 3)
    pack = PackedModels(device=CPU)
    for index, config in enumerate(configs):
        pack.join(_member(str(index), config))
    for batch in shared:
        pack.train_step({key: batch for key in pack.keys})
    for index, config in enumerate(configs):
        _assert_same_training(pack.member(str(index)), _solo(config, shared))


def test_a_refused_update_skips_only_that_members_step() -> None:
    """Each member's non-finite-loss policy decides its own update (`keep_update`): B's
    update of its batch 2 is dropped, as alone (the forward still ran: BatchNorm statistics
    moved); A is untouched by it."""
    configs = {key: _trial("mlp", "sgd", TRIALS[i]) for i, key in enumerate("AB")}
    streams = {key: _batches(400 + i, 3) for i, key in enumerate("AB")}
    pack = PackedModels(device=CPU)
    for key in "AB":
        pack.join(_member(key, configs[key]))
    asked = []
    for step in range(3):

        def keep(key: str, loss: torch.Tensor, step: int = step) -> bool:
            asked.append((key, step, bool(torch.isfinite(loss))))
            return not (key == "B" and step == 1)

        pack.train_step({key: streams[key][step] for key in "AB"}, keep_update=keep)
    assert [(key, step) for key, step, _ in asked] == [(k, s) for s in range(3) for k in "AB"]
    assert all(finite for _, _, finite in asked)
    _assert_same_training(pack.member("A"), _solo(configs["A"], streams["A"]))
    _assert_same_training(pack.member("B"), _solo(configs["B"], streams["B"], skip=frozenset({1})))


def test_members_differ_in_dropout_rate_and_a_member_without_dropout_stays_exact() -> None:
    exact = _trial("particlenet-lite", "adamw", TRIALS[0])
    dropping = _trial("particlenet-lite", "adamw", {**TRIALS[1], "dropout": 0.5})
    streams = [_batches(400, 3), _batches(401, 3)]
    pack = PackedModels(device=CPU)
    pack.join(_member("exact", exact))
    pack.join(_member("dropping", dropping))
    for step in range(3):
        losses = pack.train_step({"exact": streams[0][step], "dropping": streams[1][step]})
        assert torch.isfinite(losses["dropping"])
    _assert_same_training(pack.member("exact"), _solo(exact, streams[0]))
    _assert_same_training(pack.member("dropping"), _solo(dropping, streams[1]))
    # The rate is the member's own: its model keeps its nn.Dropout(p=0.5).
    assert pack.member("dropping").model.fc[0][2].p == 0.5


def test_a_model_of_another_shape_is_refused_with_the_difference_named() -> None:
    pack = PackedModels(device=CPU)
    pack.join(_member("small", _trial("particlenet-lite", "adamw", {"k": 7})))
    with pytest.raises(ModelError) as caught:
        pack.join(_member("wide", _trial("particlenet-lite", "adamw", {"k": 5})))
    assert str(caught.value) == (
        "trial 'wide' cannot join the pack: its model differs in `edge_convs.0.k` (5; the "
        "pack has 7); packed trials may differ only in weights, optimizer settings and "
        "dropout rates, so run it in a pack of its own (or with resources.pack: off)"
    )


def test_a_key_joins_once() -> None:
    pack = PackedModels(device=CPU)
    pack.join(_member("a", _trial("mlp", "sgd", {})))
    with pytest.raises(ModelError, match="trial 'a' is already in the pack; give each a new key"):
        pack.join(_member("a", _trial("mlp", "sgd", {})))


def test_members_build_as_their_solo_trials_whatever_the_order() -> None:
    """build_member seeds from training.seed and leaves the global RNG alone."""
    config = _trial("particlenet-lite", "adamw", TRIALS[1])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    member = _member("x", config)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(config.training.seed)
    solo = build_model("particlenet-lite", num_features=7, num_classes=2, options={"dropout": 0.0})
    for name, tensor in solo.state_dict().items():
        assert torch.equal(member.model.state_dict()[name], tensor), name


class _CumulativeNorm(torch.nn.Module):
    """A user model whose BatchNorm keeps a cumulative average (momentum None): the pack runs
    it as separate tensor operations instead of the folded native kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(NUM_FEATURES, momentum=None)
        self.head = torch.nn.Linear(NUM_FEATURES, NUM_CLASSES)

    def forward(
        self, points: torch.Tensor, features: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.head(self.norm(features).mean(dim=-1))


def test_a_batchnorm_with_a_cumulative_average_trains_as_alone() -> None:
    streams = [_batches(500 + i, 3) for i in range(2)]
    solos, pack = [], PackedModels(device=CPU)
    for index, stream in enumerate(streams):
        torch.manual_seed(index)
        packed_model = _CumulativeNorm()
        torch.manual_seed(index)
        solo_model = _CumulativeNorm()
        spec = OptimizerSpec(name="sgd", momentum=0.9)
        pack.join(
            PackMember(
                key=str(index),
                model=packed_model,
                optimizer=build_optimizer(packed_model, spec, lr=0.1),
            )
        )
        optimizer = build_optimizer(solo_model, spec, lr=0.1)
        for batch in stream:
            logits = solo_model(
                batch.inputs["points"], batch.inputs["features"], batch.inputs["mask"]
            )
            F.cross_entropy(logits, batch.labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        solos.append(PackMember(key="solo", model=solo_model, optimizer=optimizer))
    for step in range(3):
        pack.train_step({str(i): stream[step] for i, stream in enumerate(streams)})
    for index, solo in enumerate(solos):
        packed = pack.member(str(index)).model.state_dict()
        for name, tensor in solo.model.state_dict().items():
            _assert_close(name, packed[name], tensor, 0.1, adaptive=False)
