"""benchmarks/memory.py runs DDP and FSDP2 on two real ranks and reports each rank's peak."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.memory import main

ROOT = Path(__file__).parents[2]


def test_quick_run_measures_both_strategies_on_every_rank(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.memory", "--quick", "--out", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "memory-cpu-2ranks.json").read_text())
    assert result["model"] == "particle-transformer" and result["parameters"] > 0
    assert [p["strategy"] for p in result["passes"]] == ["ddp", "fsdp"]
    assert all(len(p["peak_mib"]) == 2 and min(p["peak_mib"]) > 0 for p in result["passes"])
    ratio = result["median_peak_mib"]["fsdp"] / result["median_peak_mib"]["ddp"]
    assert result["fsdp_over_ddp"] == pytest.approx(ratio)
    assert "| DDP MiB | FSDP MiB | FSDP / DDP | goal <= 0.6 |" in run.stdout


def test_one_rank_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--ranks", "1"])
    assert "--ranks is 1: comparing DDP with FSDP needs 2 or more" in capsys.readouterr().err
