"""The physics check runs end to end: Pythia jets, three `trainyard run`s, one row per model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.environment import describe
from benchmarks.physics import MODELS, RECIPES, main
from benchmarks.physics_report import Budget, PhysicsResult, Run, markdown

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


def test_a_table_written_part_way_lists_only_the_models_trained() -> None:
    budget = Budget(train_jets=100, val_jets=100, steps=2, batch_size=32, warmup_steps=1)
    run = Run(
        model="pfn",
        seed=1,
        parameters=10,
        max_particles=16,
        lr=1e-3,
        steps=2,
        train_s=1.0,
        run_s=2.0,
        val_auc=0.9,
        val_accuracy=0.8,
        val_rej30=20.0,
        val_rej50=10.0,
        val_loss=0.4,
    )
    result = PhysicsResult(
        environment=describe(),
        load_average_end=(0.0, 0.0, 0.0),
        command="python -m benchmarks.physics",
        quick=True,
        budget=budget,
        recipes=[RECIPES["particlenet"], RECIPES["pfn"]],
        data="data",
        data_generate_s=0.0,
        runs=[run],
    )
    rows = [line for line in markdown(result).splitlines() if line.startswith("| p")]
    assert rows == [
        "| pfn | 10 | 16 | 100 / 100 | 2 x 32 | 0.001 | 1 | 0.9000 | 0.8000 | 10.0 | 20.0 |"
    ]
