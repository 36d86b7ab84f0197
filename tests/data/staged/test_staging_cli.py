"""`trainyard data stage`: stages under $TRAINYARD_HOME by default, reuses, reports bad input."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.data import config_files
from trainyard.cli.app import app
from trainyard.data.staged.dataset import StagedDataset

WRAP = config_files.WRAP


def _staged_folders(cache_root: Path) -> list[Path]:
    return sorted(p for p in cache_root.iterdir() if p.is_dir())


def test_stage_then_reuse_under_trainyard_home(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    first = runner.invoke(app, ["data", "stage", str(toy_dir), "--max-particles", "16"])
    assert first.exit_code == 0, first.output
    assert "staged 500 jets from 3 file(s)" in first.output
    cache_root = tmp_path / "home" / "cache" / "staged"
    [folder] = _staged_folders(cache_root)
    assert StagedDataset.open(folder).specs["features"].shape == (7, 16)

    again = runner.invoke(app, ["data", "stage", str(toy_dir), "--max-particles", "16"])
    assert again.exit_code == 0, again.output
    assert "reused" in again.output

    out = tmp_path / "elsewhere"
    weaver = runner.invoke(
        app, ["data", "stage", str(toy_dir), "--data-config", str(WRAP), "--out", str(out)]
    )
    assert weaver.exit_code == 0, weaver.output
    [weaver_folder] = _staged_folders(out)
    labels = np.concatenate(StagedDataset.open(weaver_folder).open_arrays("_label_"))
    assert labels.shape == (500,)


def test_stage_names_a_missing_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["data", "stage", str(tmp_path / "nothing*.parquet")])
    assert result.exit_code != 0
    assert "no dataset file matches" in str(result.exception)
