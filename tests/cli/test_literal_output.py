"""Text from workers, logs and user files prints as it is, never as rich markup."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli.conftest import MARKUP, StoredExperiment
from tests.integration.helpers import cli_env, run_cli


def _env(home: Path) -> dict[str, str]:
    """A `trainyard` process writing to a pipe with no COLUMNS hint, as in a batch job."""
    env = cli_env(home)
    env.pop("COLUMNS")
    return env


def test_show_prints_errors_messages_and_hyperparameters_literally(
    stored: StoredExperiment,
) -> None:
    result = run_cli(["show", "literal"], _env(stored.home), timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "note [/x]" in lines
    assert f"trial 1 (id {stored.trial_ids[1]}) error: worker failed [/x]" in lines
    for text in MARKUP:
        assert text in lines, f"{text!r} was not printed on a line of its own"
    assert "act=[bold]red[/bold]" in result.stdout
    assert "act=[link=file:///etc/passwd]x[/link]" in result.stdout


def test_logs_prints_a_worker_log_literally(stored: StoredExperiment) -> None:
    result = run_cli(["logs", str(stored.trial_ids[1])], _env(stored.home), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == stored.log_path.read_text()


def test_an_error_quoting_a_user_file_prints_literally(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump({"name": "x", "model": "mlp", "[/x]": 1}))
    result = run_cli(["validate", str(file)], _env(tmp_path / "home"), timeout=120)
    assert result.returncode == 2, result.stderr
    assert "unknown key '[/x]'" in result.stderr
    assert "MarkupError" not in result.stderr


def test_a_long_path_prints_whole_on_one_line(tmp_path: Path, toy_data: Path) -> None:
    folder = tmp_path / ("[bold]folder-" * 8)
    file = folder / "experiment.yaml"
    assert len(str(file)) > 80
    folder.mkdir()
    data = {"train": str(toy_data / "train/*.parquet"), "val": str(toy_data / "val/*.parquet")}
    training = {"max_length": {"batches": 4}}
    file.write_text(
        yaml.safe_dump({"name": "x", "model": "mlp", "data": data, "training": training})
    )
    result = run_cli(["validate", str(file)], _env(tmp_path / "home"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{file} is valid: experiment 'x'" in result.stdout.splitlines()[0]
