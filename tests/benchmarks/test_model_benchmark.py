"""The model benchmark runs end to end: both implementations, a ratio, eval parity, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.model import main

ROOT = Path(__file__).parents[2]


def test_quick_run_times_both_models_and_reports_a_ratio(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.model", "--quick", "--out", str(tmp_path)]
    command += ["--tag", "model-quick"]
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy()
    )
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "model-quick.json").read_text())
    assert result["settings"]["quick"] is True
    assert [case["model"] for case in result["cases"]] == ["particlenet", "particlenet-lite"]
    for case in result["cases"]:
        assert {run["implementation"] for run in case["passes"]} == {"weaver-core", "trainyard"}
        assert case["ratio"] > 0
        assert case["eval_max_abs_diff"] < 1e-4
        assert set(case["peak_memory_mib"]) == {"weaver-core", "trainyard"}
        assert all(run["user_s_per_step"] > 0 for run in case["passes"])
    table = (tmp_path / "model-quick.md").read_text()
    assert "| particlenet | 4 |" in table
    assert "| particlenet-lite | 4 |" in table


def test_fewer_than_three_repeats_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--repeats", "2"])
    assert (
        "--repeats is 2: every figure is a median of 3 or more passes" in capsys.readouterr().err
    )


def test_too_few_slots_for_k_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--slots", "16"])
    assert "--slots is 16: ParticleNet needs more than k=16" in capsys.readouterr().err
