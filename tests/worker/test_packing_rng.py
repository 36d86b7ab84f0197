"""Each packed trial's randomness is its own: its dropout masks are its solo trial's.

A member owns a generator started from the state its solo process has at its first step
(`build_member`, `Trainer(own_rng=True)`), the pack's MemberDropout draws the member's masks
from it with nn.Dropout's own op, and its checkpoint stores that generator where a solo
checkpoint stores the process's. So whoever its packmates are, whoever joins or leaves, and
across a resume in another pack or alone, it trains as alone (the exactness tests of
tests/worker/test_packing.py, here with dropout). The helpers are test_packing.py's.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import torch

from tests.worker.test_packing import (
    CPU,
    TOTAL_BATCHES,
    TRIALS,
    _assert_same_training,
    _batches,
    _deterministic,  # noqa: F401 (autouse fixture)
    _member,
    _solo,
    _trial,
)
from trainyard.config import parse_experiment
from trainyard.config.trial import TrialConfig, resolve_trial
from trainyard.protocol import OutcomeState, TrialSpec
from trainyard.worker.client import MasterClient
from trainyard.worker.distributed import World
from trainyard.worker.packing import PackedModels, PackMember
from trainyard.worker.packing.loop import PackedTrial, PackLoop
from trainyard.worker.reporter import Reporter
from trainyard.worker.rng import (
    TORCH,
    capture_rng_state,
    drawing_from,
    own_generator,
    restore_rng_state,
)
from trainyard.worker.trainer import Trainer

DROPPING = {"lr": 0.05, "seed": 7, "dropout": 0.5}


def test_a_dropping_trial_draws_its_solo_masks_whoever_its_packmates() -> None:
    """The same trial first in a pack of two, then last in a pack of three (other lrs,
    seeds and rates, one without dropout): both times it ends as alone, and so does the
    other dropping member."""
    config = _trial("mlp", "sgd", DROPPING)
    stream = _batches(600, TOTAL_BATCHES)
    solo = _solo(config, stream)
    packmates = {
        "A": _trial("mlp", "sgd", {**TRIALS[0], "dropout": 0.3}),
        "B": _trial("mlp", "sgd", {**TRIALS[1], "dropout": 0.2}),
        "C": _trial("mlp", "sgd", TRIALS[2]),
    }
    streams = {key: _batches(610 + i, TOTAL_BATCHES) for i, key in enumerate(packmates)}
    for order in (["X", "A"], ["B", "C", "X"]):
        pack = PackedModels(device=CPU)
        for key in order:
            pack.join(_member(key, config if key == "X" else packmates[key]))
        for step in range(TOTAL_BATCHES):
            pack.train_step({key: (stream if key == "X" else streams[key])[step] for key in order})
        _assert_same_training(pack.member("X"), solo)
    _assert_same_training(pack.member("B"), _solo(packmates["B"], streams["B"]))
    # Not vacuous: without its masks the trial ends elsewhere.
    undropped = _solo(_trial("mlp", "sgd", {**DROPPING, "dropout": 0.0}), stream)
    first = next(iter(solo.model.state_dict()))
    assert not torch.allclose(
        undropped.model.state_dict()[first], solo.model.state_dict()[first], atol=1e-3
    )


def test_a_member_resumed_in_another_pack_draws_on_as_uninterrupted() -> None:
    """X trains 2 steps with A, is checkpointed (model, optimizer, schedule, the RNG state as
    its Trainer saves it), and resumes in a pack with B and C, as their last member: it ends
    as X trained 4 steps with A."""
    config = _trial("mlp", "sgd", DROPPING)
    stream, other = _batches(700, TOTAL_BATCHES), _batches(701, TOTAL_BATCHES)
    packmate = _trial("mlp", "sgd", {**TRIALS[0], "dropout": 0.3})
    runs = {}
    for interrupted in (False, True):
        pack = PackedModels(device=CPU)
        pack.join(_member("X", config))
        pack.join(_member("A", packmate))
        for step in range(TOTAL_BATCHES):
            if interrupted and step == 2:
                left = pack.leave("X")
                saved = _checkpoint(left)
                pack = PackedModels(device=CPU)
                for key, values in (("B", TRIALS[1]), ("C", {**TRIALS[2], "dropout": 0.4})):
                    pack.join(_member(key, _trial("mlp", "sgd", values)))
                pack.join(_resumed("X", config, saved))
            present = {"X": stream[step]} | {key: other[step] for key in pack.keys if key != "X"}
            pack.train_step(present)
        runs[interrupted] = pack.member("X")
    _assert_same_training(runs[True], runs[False])


def test_a_joining_member_leaves_the_others_masks_alone() -> None:
    """X drops with A; D (dropping too) joins at step 2 and A leaves: X still ends as alone."""
    config = _trial("mlp", "sgd", DROPPING)
    stream = _batches(800, TOTAL_BATCHES)
    pack = PackedModels(device=CPU)
    pack.join(_member("X", config))
    pack.join(_member("A", _trial("mlp", "sgd", {**TRIALS[0], "dropout": 0.3})))
    for step in range(TOTAL_BATCHES):
        if step == 2:
            pack.join(_member("D", _trial("mlp", "sgd", {**TRIALS[1], "dropout": 0.5})))
            pack.leave("A")
        pack.train_step({key: stream[step] for key in pack.keys})
    _assert_same_training(pack.member("X"), _solo(config, stream))


def _checkpoint(member: PackMember) -> dict[str, Any]:
    """What a packed member's Trainer writes (worker/trainer.py `save_checkpoint`)."""
    assert member.lr_schedule is not None
    return {
        "model": member.model.state_dict(),
        "optimizer": member.optimizer.state_dict(),
        "schedule": member.lr_schedule.state_dict(),
        "rng": capture_rng_state(own=member.generator),
    }


def _resumed(key: str, config: TrialConfig, saved: dict[str, Any]) -> PackMember:
    """A member rebuilt and resumed as its Trainer resumes it: states loaded, the process's
    RNG restored, then its own generator taken from it (`Trainer(own_rng=True)`)."""
    member = _member(key, config)
    assert member.lr_schedule is not None
    member.model.load_state_dict(saved["model"])
    member.optimizer.load_state_dict(saved["optimizer"])
    member.lr_schedule.load_state_dict(saved["schedule"])
    restore_rng_state(saved["rng"])
    member.generator = own_generator(CPU)
    return member


def test_a_checkpoint_holds_the_members_own_generator_in_the_solo_place() -> None:
    torch.manual_seed(3)
    generator = own_generator(CPU)
    assert torch.equal(generator.get_state(), torch.get_rng_state())
    process = torch.get_rng_state()
    with drawing_from(generator):
        drawn = torch.rand(5)
    assert torch.equal(torch.get_rng_state(), process)  # the process's stream is untouched
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(5))  # drawn as the default generator would have
    state = capture_rng_state(own=generator)
    assert torch.equal(state[TORCH], generator.get_state())
    assert torch.equal(capture_rng_state()[TORCH], torch.get_rng_state())


# Through the real worker pieces: solo Trainers, the packed worker's loop, real checkpoints.


class _Outcomes(MasterClient):
    """A member's client that keeps the outcome the loop reports instead of sending it."""

    def __init__(self, trial_id: int) -> None:
        super().__init__(url="http://unused.invalid", token="unused", trial_id=trial_id)
        self.reported: list[OutcomeState] = []

    def report_outcome(self, state: OutcomeState, message: str | None = None) -> None:
        self.reported.append(state)


def _trainer(
    toy: Path, folder: Path, number: int, values: dict[str, Any], *, packed: bool
) -> Trainer:
    """A trial of 4 batches of 10 jets with a checkpoint every 2, built as a worker builds
    it (a packed worker with `own_rng`), resuming from `folder/checkpoints`."""
    experiment = parse_experiment(
        {
            "name": "packrng",
            "model": {"name": "mlp", "options": {"dropout": 0.0}},
            "data": {"train": str(toy / "train/*.parquet"), "val": str(toy / "val/*.parquet")},
            "hyperparameters": {"batch_size": 10},
            "training": {
                "max_length": {"batches": TOTAL_BATCHES},
                "validation_period": {"batches": 2},
                "optimizer": {"name": "sgd", "momentum": 0.9},
            },
            "checkpoint": {"period": {"batches": 2}},
        }
    )
    spec = TrialSpec(
        trial_id=number + 1,
        experiment_id=1,
        trial_number=number,
        attempt=1,
        config=resolve_trial(experiment, {"batch_size": 10, **values}),
        checkpoint_dir=str(folder / "checkpoints"),
        staging_dir=str(toy / "staged"),
        heartbeat_interval_s=5.0,
    )
    return Trainer(
        spec=spec,
        reporter=Reporter(None, heartbeat_interval_s=5.0),
        world=World(),
        stop_requested=threading.Event(),
        own_rng=packed,
    )


def _weights_after(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in trainer.model.state_dict().items()}


def _trained_in_pack(trainers: list[Trainer]) -> list[dict[str, torch.Tensor]]:
    clients = [_Outcomes(t.spec.trial_id) for t in trainers]
    members = [PackedTrial(client=c, trainer=t) for c, t in zip(clients, trainers, strict=True)]
    PackLoop(members).train()
    assert all(c.reported == [OutcomeState.COMPLETED] for c in clients)
    return [_weights_after(t) for t in trainers]


def _at_step_2(trainer: Trainer) -> Trainer:
    assert trainer.state.batches == 2  # resumed
    return trainer


def _from_step_2(source: Path, folder: Path) -> Path:
    """A copy of a trial's folder whose newest checkpoint is the one at step 2."""
    shutil.copytree(source, folder)
    shutil.rmtree(folder / "checkpoints" / f"step-{TOTAL_BATCHES:08d}")
    return folder


def test_a_packed_trial_with_dropout_trains_resumes_and_ends_as_its_solo_trial(
    toy: Path, tmp_path: Path
) -> None:
    """X (dropout 0.5) in a pack with A; alone; resumed at step 2 from its packed checkpoint
    in a pack with B (as its last member) and alone; resumed from its solo checkpoint in a
    pack with A: every run ends with the same weights."""
    x = {"lr": 0.05, "seed": 3, "dropout": 0.5}
    a = {"lr": 0.01, "seed": 1, "dropout": 0.3}
    b = {"lr": 0.02, "seed": 2, "dropout": 0.2}
    packed, _ = _trained_in_pack(
        [
            _trainer(toy, tmp_path / "x", 0, x, packed=True),
            _trainer(toy, tmp_path / "a", 1, a, packed=True),
        ]
    )
    solo = _trainer(toy, tmp_path / "solo", 0, x, packed=False)
    assert solo.train() is OutcomeState.COMPLETED
    ends = {"alone": _weights_after(solo)}
    _, ends["resumed in another pack"] = _trained_in_pack(
        [
            _trainer(toy, tmp_path / "b", 2, b, packed=True),
            _at_step_2(
                _trainer(toy, _from_step_2(tmp_path / "x", tmp_path / "x2"), 0, x, packed=True)
            ),
        ]
    )
    resumed_alone = _at_step_2(
        _trainer(toy, _from_step_2(tmp_path / "x", tmp_path / "x3"), 0, x, packed=False)
    )
    resumed_alone.train()
    ends["packed checkpoint resumed alone"] = _weights_after(resumed_alone)
    ends["solo checkpoint resumed in a pack"], _ = _trained_in_pack(
        [
            _at_step_2(
                _trainer(toy, _from_step_2(tmp_path / "solo", tmp_path / "x4"), 0, x, packed=True)
            ),
            _trainer(toy, tmp_path / "a2", 1, a, packed=True),
        ]
    )
    for how, weights in ends.items():
        for name, tensor in packed.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=how)
