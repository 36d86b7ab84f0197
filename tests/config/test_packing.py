"""`resources.pack`: the settings it takes, the one rule of what a pack's trials may differ in,
and the message each mistake gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainyard.config import load_experiment, parse_experiment
from trainyard.config.packing import PACK_COMPATIBLE_HYPERPARAMETERS, shape_changing
from trainyard.config.schema import OptimizerSpec
from trainyard.config.trial import OPTIMIZER_HYPERPARAMETERS, resolve_trial
from trainyard.data.batch import DEFAULT_INPUT_ROLES
from trainyard.errors import ConfigError, ModelError
from trainyard.models import accepted_options, build_model, input_roles, known_models
from trainyard.worker.optim import build_optimizer
from trainyard.worker.packing import PackedModels, PackMember

RAW: dict[str, Any] = {
    "name": "pack",
    "model": "particlenet-lite",
    "data": {"train": "a", "val": "b"},
    "hyperparameters": {"lr": {"type": "log", "min": 1e-4, "max": 1e-2, "count": 4}},
    "searcher": {"name": "grid"},
    "training": {"max_length": {"batches": 10}},
}

BAD_SETTING = (
    "`resources.pack`: must be auto, off or the number of trials one worker trains together "
    "(1 or more), e.g. `pack: 4` (got {!r})"
)


def _with(pack: object, **changes: Any) -> dict[str, Any]:
    return {**RAW, "resources": {"pack": pack}, **changes}


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_experiment(raw)
    return caught.value.problems


@pytest.mark.parametrize(("given", "taken"), [("auto", "auto"), ("off", "off"), (4, 4), (1, 1)])
def test_pack_takes_auto_off_or_a_number_of_trials(given: object, taken: object) -> None:
    assert parse_experiment(_with(given)).resources.pack == taken


def test_pack_is_off_unless_asked() -> None:
    assert parse_experiment(RAW).resources.pack == "off"


def test_a_bare_off_in_yaml_means_off(tmp_path: Path) -> None:
    """YAML 1.1 reads `off` as false."""
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: pack\nmodel: mlp\ndata: {train: a, val: b}\n"
        "training: {max_length: {batches: 1}}\nresources: {pack: off}\n"
    )
    assert load_experiment(path).resources.pack == "off"


@pytest.mark.parametrize("given", [0, -2, "four", True, 2.5])
def test_a_bad_setting_is_named_with_what_is_allowed(given: object) -> None:
    assert _problems(_with(given)) == [BAD_SETTING.format(given)]


def test_searching_a_shape_changing_hyperparameter_with_a_pack_size_names_it() -> None:
    spaces = {**RAW["hyperparameters"], "k": {"type": "categorical", "vals": [7, 12]}}
    assert _problems(_with(4, hyperparameters=spaces)) == [
        "`hyperparameters.k`: searched, but it changes the model's tensor shapes or code, and "
        "`resources.pack: 4` trains 4 trials as one model that must share them; make `k` a "
        "constant, or set `resources.pack` to auto (packs only searches it can) or off; a "
        "pack's trials may differ only in dropout, lr, momentum, seed, weight_decay"
    ]


def test_auto_and_a_constant_shape_hyperparameter_are_fine() -> None:
    spaces = {**RAW["hyperparameters"], "k": {"type": "categorical", "vals": [7, 12]}}
    assert parse_experiment(_with("auto", hyperparameters=spaces)).resources.pack == "auto"
    constant = {
        **RAW["hyperparameters"],
        "k": 12,
        "dropout": {"type": "double", "min": 0.0, "max": 0.5, "count": 2},
    }
    assert parse_experiment(_with(4, hyperparameters=constant)).resources.pack == 4


def test_a_pack_needs_one_device_and_no_fp16() -> None:
    raw = _with(4, training={"max_length": {"batches": 10}, "amp": "fp16"})
    raw["resources"] = {"pack": 4, "slots_per_trial": 2}
    assert _problems(raw) == [
        "`resources.pack`: 4 trials per worker need one device per pack, but "
        "`resources.slots_per_trial` is 2; set slots_per_trial to 1, or pack to off",
        "`training.amp`: fp16 needs a gradient scaler per trial, which `resources.pack: 4` "
        "cannot keep apart; use bf16 or off, or set pack to off",
    ]


def test_seed_is_a_hyperparameter_of_the_training_loop() -> None:
    trial = resolve_trial(parse_experiment(RAW), {"lr": 0.01, "seed": 7})
    assert trial.training.seed == 7
    assert "seed" not in trial.model.options


def test_every_optimizer_hyperparameter_may_differ_within_a_pack() -> None:
    assert OPTIMIZER_HYPERPARAMETERS <= PACK_COMPATIBLE_HYPERPARAMETERS
    assert shape_changing(["lr", "seed", "batch_size", "k"]) == ["batch_size", "k"]


ALTERNATIVES = {
    "k": 5,
    "conv_channels": [[16, 16], [32, 32]],
    "fc_dim": 48,
    "dropout": 0.3,
    "hidden_dim": 24,
    "num_layers": 3,
}
"""A second value for each zoo model option, to build a model that differs only there."""


PACKABLE = [name for name in known_models() if input_roles(name) == DEFAULT_INPUT_ROLES]
"""Packs feed (points, features, mask); models taking other inputs are refused by preflight."""


@pytest.mark.parametrize("model", PACKABLE)
def test_the_rule_agrees_with_what_a_pack_accepts(model: str) -> None:
    """Each zoo option the rule allows lets two models share a pack; each other one is
    refused by the engine: the config refuses exactly what the engine cannot train."""
    for option in sorted(accepted_options(model) or ()):
        pack = PackedModels(device=torch.device("cpu"))
        pack.join(_member("first", model, {}))
        other = _member("second", model, {option: ALTERNATIVES[option]})
        if option in PACK_COMPATIBLE_HYPERPARAMETERS:
            pack.join(other)
        else:
            with pytest.raises(ModelError, match="cannot join the pack"):
                pack.join(other)


def _member(key: str, model: str, options: dict[str, Any]) -> PackMember:
    built = build_model(model, num_features=7, num_classes=2, options=options)
    optimizer = build_optimizer(built, OptimizerSpec(), lr=1e-3)
    return PackMember(key=key, model=built, optimizer=optimizer)
