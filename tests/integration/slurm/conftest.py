"""A real SLURM cluster for the session: deploy/slurm/cluster-up.sh in a temporary folder.

In CI (CI=true) a missing SLURM is a failure, so these tests cannot silently stop running;
elsewhere they are skipped when SLURM's daemons are not installed (`make slurm-deps`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import start_cli

DEPLOY = Path(__file__).parents[3] / "deploy" / "slurm"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster: its config file, and how to ask it about jobs and nodes."""

    state_dir: Path
    conf: Path

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def jobs(self, name_prefix: str) -> list[dict[str, Any]]:
        """Every job (finished ones too) whose name starts with `name_prefix`."""
        out = self.command("squeue", "--json")
        return [j for j in json.loads(out)["jobs"] if j["name"].startswith(name_prefix)]

    def active_job_ids(self) -> list[str]:
        """Jobs pending, running or completing: what plain `squeue` lists."""
        return self.command("squeue", "--noheader", "--format=%i").split()

    def command(self, *args: str) -> str:
        result = subprocess.run(
            list(args),
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
        return result.stdout


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    missing = [d for d in DAEMONS if shutil.which(d, path=SEARCH_PATH) is None]
    problem = f"SLURM is not installed ({', '.join(missing)} missing; `make slurm-deps`)"
    if not missing and os.geteuid() != 0:
        problem = "the test cluster's slurmd must run as root"
    elif not missing:
        problem = ""
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    state = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(
        [DEPLOY / "cluster-up.sh", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    cluster = SlurmCluster(state_dir=state, conf=state / "etc" / "slurm.conf")
    try:
        if up.returncode != 0:
            pytest.fail(f"cluster-up.sh failed:\n{up.stdout}{up.stderr}")
        yield cluster
    finally:
        subprocess.run([DEPLOY / "cluster-down.sh", str(state)], capture_output=True, check=False)


SLURM_POOLS: dict[str, Any] = {
    "default": {"executor": "local"},
    # Three nodes of 2 CPUs: 2 one-core slots per node.
    "cpu": {
        "executor": "slurm",
        "slurm": {
            "partition": "cpu",
            "tasks_per_node": 2,
            "cpus_per_task": 1,
            "mem_per_task": "600M",
            "max_nodes": 3,
            "status_interval_s": 0.3,
        },
    },
    # The same nodes with their fake GPUs, one GPU per node and trial rank.
    "gpu": {
        "executor": "slurm",
        "slurm": {
            "partition": "gpu",
            "gpus_per_node": 1,
            "cpus_per_gpu": 1,
            "mem_per_gpu": "600M",
            "max_nodes": 3,
            "status_interval_s": 0.3,
        },
    },
}


@pytest.fixture
def write_facility(tmp_path: Path):
    """Write a facility file with the test pools, plus or replacing `pools`."""

    def write(**pools: Any) -> Path:
        path = tmp_path / "facility.yaml"
        path.write_text(yaml.safe_dump({"pools": {**SLURM_POOLS, **pools}}))
        return path

    return write


@pytest.fixture
def start_run() -> Iterator[Callable[[list[str], dict[str, str]], subprocess.Popen[str]]]:
    """`start_cli`, and at the end of the test every CLI still running is killed: one left
    behind by a failed test would go on submitting jobs to the next session's cluster."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        started.append(start_cli(args, env))
        return started[-1]

    yield start
    for cli in started:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
