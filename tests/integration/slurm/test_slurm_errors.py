"""Pools that cannot work on this cluster fail before anything is queued, with a message that
names the pool, what SLURM said, and what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import cli_env, experiment, run_cli
from tests.integration.slurm.conftest import SLURM_POOLS

pytestmark = pytest.mark.integration


def _pool(name: str, **slurm: Any) -> dict[str, Any]:
    return {"executor": "slurm", "slurm": {**SLURM_POOLS[name]["slurm"], **slurm}}


def _run(slurm_cluster, toy_data, write_experiment, facility: Path, tmp_path: Path, **resources):
    config = experiment(toy_data, name="bad-pool", resources={"pool": "cpu", **resources})
    home = tmp_path / "home"
    env = cli_env(home, **slurm_cluster.env())
    result = run_cli(["run", str(write_experiment(config)), "--facility", str(facility)], env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bad-pool" not in run_cli(["list"], env).stdout, "nothing may be queued"
    return " ".join(result.stderr.split())  # rich wraps long lines


def test_sbatch_refusal_shows_slurms_message_and_the_options(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path
) -> None:
    facility = write_facility(cpu=_pool("cpu", sbatch_options=["--constraint=bigmem"]))
    message = _run(slurm_cluster, toy_data, write_experiment, facility, tmp_path)
    assert "sbatch refused a trial of 1 slot(s) of pool 'cpu'" in message
    assert "Invalid feature specification" in message  # SLURM's own words
    assert "--partition=cpu --nodes=1 --ntasks-per-node=1 --cpus-per-task=1" in message
    assert "the pool's own sbatch_options were --constraint=bigmem" in message


def test_partition_that_does_not_exist(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path
) -> None:
    facility = write_facility(cpu=_pool("cpu", partition="cpus"))
    message = _run(slurm_cluster, toy_data, write_experiment, facility, tmp_path)
    assert (
        "`pools.cpu.slurm.partition`: partition 'cpus' does not exist on this cluster; "
        "did you mean 'cpu'? partitions: cpu, gpu"
    ) in message


def test_more_gpus_per_node_than_the_partitions_nodes_have(
    slurm_cluster, toy_data, write_experiment, write_facility, tmp_path
) -> None:
    facility = write_facility(gpu=_pool("gpu", gpus_per_node=4))
    message = _run(slurm_cluster, toy_data, write_experiment, facility, tmp_path, pool="gpu")
    assert (
        "`pools.gpu.slurm.gpus_per_node`: pool 'gpu' has gpus_per_node 4 but the nodes of "
        "partition 'gpu' have at most 2 GPU(s)"
    ) in message
