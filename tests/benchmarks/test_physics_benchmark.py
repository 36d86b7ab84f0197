"""The physics check runs end to end: Pythia jets, three `trainyard run`s, one row per model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.physics import MODELS, main

ROOT = Path(__file__).parents[2]


def test_quick_run_trains_every_model_and_writes_one_row_each(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.physics", "--quick", "--out", str(tmp_path)]
    command += ["--data", str(tmp_path / "data"), "--tag", "physics-quick"]
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy()
    )
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "physics-quick.json").read_text())
    assert result["quick"] is True
    assert [r["model"] for r in result["runs"]] == list(MODELS)
    for row in result["runs"]:
        assert 0 <= row["val_auc"] <= 1
        assert 0 <= row["val_accuracy"] <= 1
        assert row["steps"] == result["budget"]["steps"]
        assert row["parameters"] > 0
    assert sorted(p.name for p in (tmp_path / "data" / "train").glob("*.parquet")) == [
        "top-tagging-0000.parquet"
    ]
    table = (tmp_path / "physics-quick.md").read_text()
    for model in MODELS:
        assert sum(line.startswith(f"| {model} |") for line in table.splitlines()) == 1


def test_fewer_jets_than_a_batch_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--train-jets", "10", "--batch-size", "64"])
    assert "--train-jets is 10: fewer than one batch of --batch-size 64" in capsys.readouterr().err
