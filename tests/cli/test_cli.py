"""The command line as a user meets it: messages without tracebacks, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from trainyard.datasets.toy import write_toy_dataset

CLI = [sys.executable, "-c", "from trainyard.cli.app import main; main()"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"TRAINYARD_HOME": str(cwd / "home"), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_validate_reports_problems_without_a_traceback(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump({"name": "x", "modle": "mlp"}))
    result = _run("validate", str(file), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'modle'; did you mean 'model'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_accepts_a_good_file(tmp_path: Path) -> None:
    write_toy_dataset(tmp_path / "d/train", num_jets=32, seed=1)
    write_toy_dataset(tmp_path / "d/val", num_jets=32, seed=2)
    file = tmp_path / "good.yaml"
    config = {
        "name": "good",
        "model": "mlp",
        "data": {"train": "d/train/*.parquet", "val": "d/val/*.parquet"},
        "training": {"max_length": {"epochs": 1}},
    }
    file.write_text(yaml.safe_dump(config))
    result = _run("validate", str(file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "good.yaml is valid" in result.stdout


def test_show_of_an_unknown_experiment_points_to_list(tmp_path: Path) -> None:
    result = _run("show", "nothing-here", cwd=tmp_path)
    assert result.returncode == 2
    assert "no experiment named 'nothing-here'" in result.stderr
    assert "trainyard list" in result.stderr


def test_run_needs_a_file_or_resume(tmp_path: Path) -> None:
    result = _run("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "give an experiment file, or --resume EXPERIMENT" in result.stderr
