"""benchmarks/gpu.sh: its dry run on the CPU runs every step and ends with the summary table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.gpu_summary import GpuSummary

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_dry_run_on_cpu_runs_every_benchmark_and_prints_the_table_last(tmp_path: Path) -> None:
    result = run_script("--device", "cpu", "--quick", "--no-install", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = GpuSummary.model_validate_json((tmp_path / "gpu.json").read_text())
    assert {row.benchmark for row in summary.rows} == {
        "model train step",
        "trial packing",
        "DDP scaling",
    }
    assert all(row.ratio > 0 for row in summary.rows)
    assert "loader pinned: no CUDA device" in summary.not_run
    assert summary.environment is not None and summary.environment.gpus == []
    table = (tmp_path / "gpu.md").read_text()
    last_lines = result.stdout.strip().splitlines()[-len(summary.rows) - 8 :]
    assert "| benchmark | setting | ours | reference | ratio |" in "\n".join(last_lines)
    assert "| benchmark | setting | ours | reference | ratio |" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "gpu.sh: --device is 'tpu'; use cuda or cpu"),
        (["--wheels", "/nonexistent/wheels"], "--wheels /nonexistent/wheels is not a folder"),
        (["--fast"], "gpu.sh: unknown option '--fast'; see benchmarks/gpu.sh --help"),
    ],
)
def test_bad_options_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_script(*args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr


def test_asking_for_cuda_without_a_gpu_says_so(tmp_path: Path) -> None:
    result = run_script("--device", "cuda", "--no-install", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "torch sees no CUDA device; run on a GPU machine, or --device cpu" in result.stderr
