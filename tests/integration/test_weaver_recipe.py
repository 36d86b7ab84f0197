"""weaver-core's own training command as script trials (`python -m trainyard.core.weaver`):
weaver's scalars become the trial's metrics (with weaver's own ROC AUC), each epoch's
checkpoint is registered and a later run resumes from it with `--load-epoch`, hyperparameters
become weaver options, and the example's search runs under `trainyard run` (real weaver-core,
real Master, real processes)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import (
    EXAMPLES,
    cli_env,
    last_validation,
    local_reports,
    run_by_hand,
    run_cli,
    trial_progress,
)
from trainyard.core.weaver import hyperparameter_arguments
from trainyard.core.weaver import main as weaver_recipe
from trainyard.errors import TrainyardError

pytestmark = pytest.mark.integration

STEPS_PER_EPOCH = 10


@pytest.fixture
def weaver_command(toy_data: Path, tmp_path: Path) -> list[str]:
    """The recipe's arguments for the toy set, with a copy of the example's data config
    (weaver writes its resolved .auto.yaml beside it)."""
    config = yaml.safe_load((EXAMPLES / "configs" / "top-kin-inputs.yaml").read_text())
    for group in config["inputs"].values():
        group["length"] = 32
    data_config = tmp_path / "top-kin-short.yaml"
    data_config.write_text(yaml.safe_dump(config, sort_keys=False))
    return [
        "--data-train", str(toy_data / "train" / "*.parquet"),
        "--data-val", str(toy_data / "val" / "*.parquet"),
        "--data-config", str(data_config),
        "--network-config", str(EXAMPLES / "networks" / "pfn.py"),
        "--steps-per-epoch", str(STEPS_PER_EPOCH), "--steps-per-epoch-val", "3",
        "--batch-size", "64", "--start-lr", "3e-3", "--optimizer", "adam",
        "--gpus=", "--num-workers", "0", "--fetch-step", "1",
        "--network-option", "phi_sizes", "(16, 16)", "--network-option", "f_sizes", "(16,)",
    ]  # fmt: skip


def _by_hand(folder: Path, arguments: list[str]) -> str:
    return run_by_hand([sys.executable, "-m", "trainyard.core.weaver", *arguments], folder)


def test_weaver_reports_its_scalars_and_resumes_from_a_registered_epoch(
    weaver_command: list[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    output = _by_hand(run, [*weaver_command, "--num-epochs", "1"])
    reported = local_reports(run)
    assert [(kind, step) for kind, step, _ in reported] == [
        ("training", STEPS_PER_EPOCH), ("validation", STEPS_PER_EPOCH)
    ]  # fmt: skip
    validation = reported[1][2]
    assert set(validation) == {"val_loss", "val_accuracy", "val_auc"}
    # weaver's own AUC of class 1 against class 0, as it logs it (binary: its scalar fails)
    logged = re.search(r"roc_auc_score_matrix: \n\[\[\S+\s+([0-9.]+)\]", output)
    assert logged is not None, output[-3000:]
    assert validation["val_auc"] == pytest.approx(float(logged.group(1)), abs=1e-6)
    assert set(reported[0][2]) == {"train_loss", "train_accuracy"}
    checkpoint = run / "trainyard-local" / "checkpoints" / f"step-{STEPS_PER_EPOCH:08d}"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "optimizer.pt", "state.pt", "trainyard-checkpoint.json", "trainyard-weaver.json"
    ]  # fmt: skip

    output = _by_hand(run, [*weaver_command, "--num-epochs", "2"])
    assert "Resume training from epoch 0" in output
    assert "Epoch #0 training" not in output
    resumed = local_reports(run)[len(reported) :]
    # batch 20: weaver's per-batch scalars (every REPORT_EVERY batches), then the epoch's
    assert [(kind, step, sorted(values)) for kind, step, values in resumed] == [
        ("training", 20, ["accuracy", "grad_norm", "loss"]),
        ("training", 20, ["train_accuracy", "train_loss"]),
        ("validation", 20, ["val_accuracy", "val_auc", "val_loss"]),
    ]


def test_a_managed_option_in_the_command_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("TRAINYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # local mode writes trainyard-local/ here
    with pytest.raises(SystemExit) as exit_:
        weaver_recipe(["--data-train", "x", "--model-prefix=out/net"])
    assert exit_.value.code == (
        "trainyard.core.weaver: the command sets --model-prefix, which trainyard's weaver "
        "recipe sets itself: each trial's weaver files go to its own folder "
        "(ctx.output_dir/weaver); remove it from `entrypoint.command`"
    )


def test_hyperparameters_become_weaver_options() -> None:
    from weaver.train import parser

    hparams = {"start_lr": 0.01, "batch-size": 256, "use_amp": True, "in_memory": False,
               "network_option.phi_sizes": "(64, 64)", "network_option.k": 16}  # fmt: skip
    assert hyperparameter_arguments(hparams, parser) == [
        "--start-lr", "0.01", "--batch-size", "256", "--use-amp", "--no-in-memory",
        "--network-option", "phi_sizes", "(64, 64)", "--network-option", "k", "16",
    ]  # fmt: skip
    with pytest.raises(TrainyardError) as error:
        hyperparameter_arguments({"start_lrr": 0.1}, parser)
    assert str(error.value) == (
        "hyperparameter 'start_lrr' is not an option of weaver's train.py (did you mean "
        "'start_lr'?); name it as weaver's option with underscores (start_lr for --start-lr), "
        "or network_option.<name> for --network-option <name> <value>"
    )
    with pytest.raises(TrainyardError, match="'model_prefix' is not an option"):
        hyperparameter_arguments({"model_prefix": "x"}, parser)


def test_the_weaver_example_runs_as_an_asha_search(
    weaver_command: list[str], tmp_path: Path
) -> None:
    config = yaml.safe_load((EXAMPLES / "scripts" / "weaver" / "experiment.yaml").read_text())
    arguments = [a for a in weaver_command if a != "--start-lr" and a != "3e-3"]
    config["entrypoint"]["command"] = shlex.join(
        ["python", "-m", "trainyard.core.weaver", *arguments, "--num-epochs", "2"]
    )
    config["entrypoint"]["workdir"] = str(tmp_path)
    del config["hyperparameters"]["network_option.phi_sizes"]
    config["searcher"].update(max_trials=2)
    config["searcher"]["asha"]["min_batches"] = STEPS_PER_EPOCH
    file = tmp_path / "weaver-recipe.yaml"
    file.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    result = run_cli(["run", str(file)], cli_env(home), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best val_auc at batch" in result.stdout

    trials = trial_progress(home)
    assert all("val_auc" in last_validation(home, trial_id) for trial_id in (1, 2))
    assert len(trials) == 2
    for state, validated_at, num_checkpoints in trials:
        assert state in {"COMPLETED", "STOPPED"} and num_checkpoints >= 1
        expected = [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH] if state == "COMPLETED" else [10]
        assert validated_at == expected
