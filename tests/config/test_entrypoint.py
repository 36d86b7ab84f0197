"""Script trials in the experiment file: `entrypoint` instead of model, data and training."""

from __future__ import annotations

import pytest

from trainyard.config import parse_experiment
from trainyard.errors import ConfigError


def _problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_experiment(raw)
    return str(caught.value)


def test_a_command_string_is_split_like_a_shell_and_survives_the_store() -> None:
    config = parse_experiment(
        {
            "name": "mine",
            "entrypoint": "python train.py --note 'two words'",
            "hyperparameters": {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}},
            "searcher": {"name": "random", "metric": "val_loss", "mode": "min", "max_trials": 2},
        }
    )
    assert config.entrypoint is not None
    assert config.entrypoint.command == ["python", "train.py", "--note", "two words"]
    assert config.model is None and config.data is None and config.training is None
    assert parse_experiment(config.model_dump(mode="json")) == config


def test_environment_values_become_strings() -> None:
    config = parse_experiment(
        {"name": "e", "entrypoint": {"command": ["./run.sh"], "environment": {"N": 4, "F": True}}}
    )
    assert config.entrypoint is not None
    assert config.entrypoint.environment == {"N": "4", "F": "1"}


def test_model_sections_are_refused_beside_an_entrypoint() -> None:
    message = _problems(
        {
            "name": "e",
            "entrypoint": "python train.py",
            "model": "mlp",
            "training": {"max_length": {"batches": 1}},
        }
    )
    assert (
        "`model`: a script trial (`entrypoint`) has its own model; remove `model`, or remove "
        "`entrypoint` to train a built-in model" in message
    )
    assert "`training`: a script trial (`entrypoint`) has its own training loop" in message


def test_neither_model_nor_entrypoint_names_both() -> None:
    message = _problems({"name": "e"})
    assert (
        "`model`: required key is missing (or give `entrypoint` to run your own training "
        "script instead of model, data and training)" in message
    )


def test_settings_of_the_builtin_loop_are_refused_for_scripts() -> None:
    message = _problems(
        {
            "name": "e",
            "entrypoint": "python train.py",
            "resources": {"pack": 2},
            "checkpoint": {"period": {"batches": 10}},
        }
    )
    assert "`resources.pack`: script trials run one trial per process; set it to off" in message
    assert "`checkpoint.period`: a script saves when it calls ctx.checkpoint.save" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WANDB_API_KEY", "0123456789abcdef"),
        ("HF_TOKEN", "anything"),
        ("DB_URL", "postgresql://me:hunter2@db/x"),
        ("HELPER", "ghp_0123456789abcdefghij"),
    ],
)
def test_secrets_in_the_environment_are_refused_without_echoing_them(
    name: str, value: str
) -> None:
    message = _problems(
        {"name": "e", "entrypoint": {"command": "./run.sh", "environment": {name: value}}}
    )
    assert f"`entrypoint.environment`: {name} looks like a secret" in message
    assert "export it in the environment `trainyard run` starts from instead" in message
    assert value not in message


def test_torchruns_and_trainyards_variables_are_reserved() -> None:
    for name in ("RANK", "MASTER_PORT", "TRAINYARD_TOKEN"):
        message = _problems(
            {"name": "e", "entrypoint": {"command": "a", "environment": {name: "1", "X": "v"}}}
        )
        assert f"`entrypoint.environment`: {name} is set by trainyard for every rank" in message
        assert "'v'" not in message  # other variables' values are not echoed


def test_a_command_that_cannot_be_split_is_named() -> None:
    message = _problems({"name": "e", "entrypoint": "python train.py --note 'unclosed"})
    assert "`entrypoint.command`: cannot split the command into words: No closing quotation" in (
        message
    )
