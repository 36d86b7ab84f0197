"""`trainyard run` on a Kubernetes pool, end to end against the fake API
(tests/executors/kube_fake) whose kubelet starts each pod's command as a local process: the
runner launches a trial of 2 ranks as a Job of 2 pods, torchrun in each pod meets the other at
the first pod (the fake's DNS is this machine), rank 0 reports to the Master and checkpoints;
the first pod is then evicted, the runner retries the trial as a new attempt (a new Job) from
its checkpoint, and the Job's completion ends it. The same experiment file validates on a
local and a SLURM pool.
No real cluster: what a real one adds (scheduling, images, the network) is not exercised."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.executors.kube_fake.api import FakeKubernetes
from tests.executors.kube_fake.cluster import FakeCluster, write_kubeconfig
from tests.integration.helpers import (
    checkpoint_steps,
    cli_env,
    experiment,
    start_cli,
    stored_trials,
    wait_for,
)
from trainyard.config import load_experiment
from trainyard.config.facility import load_facility
from trainyard.store import TrialState

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[tuple[FakeKubernetes, FakeCluster]]:
    api = FakeKubernetes()
    api.start()
    cluster = FakeCluster(api, run_pods=True)
    yield api, cluster
    cluster.close()
    api.stop()


def test_a_two_pod_trial_is_evicted_retried_from_its_checkpoint_and_completes(
    cluster: tuple[FakeKubernetes, FakeCluster], toy_data: Path, tmp_path: Path
) -> None:
    api, fake = cluster
    home = tmp_path / "home"
    facility = tmp_path / "facility.yaml"
    pool = {
        "kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", api)),
        "namespace": "trials",
        "image": "registry.example.org/trainyard:0.1",
        "python": sys.executable,
        "gpus_per_pod": 0,
        "ranks_per_pod": 1,
        "cpus_per_gpu": 1,
        "max_pods": 2,
        "volumes": {"data": {"claim": "trainyard-data", "mount_path": str(home)}},
    }
    facility.write_text(
        yaml.safe_dump(
            {
                "pools": {
                    "k8s": {"executor": "kubernetes", "kubernetes": pool},
                    "gpu": {"executor": "slurm", "slurm": {"partition": "g", "gpus_per_node": 4}},
                    "default": {},
                }
            }
        )
    )
    config = experiment(toy_data, resources={"slots_per_trial": 2, "pool": "k8s"})
    config["training"].update(max_length={"batches": 20}, validation_period={"batches": 20})
    file = tmp_path / "e2e.yaml"
    file.write_text(yaml.safe_dump(config))
    assert load_experiment(file).resources.pool == "k8s"
    for name in ("k8s", "gpu", "default"):  # one experiment file, any kind of pool
        load_facility(facility).pool(name)

    run = start_cli(["run", str(file)], cli_env(home, TRAINYARD_FACILITY=str(facility)))
    try:
        wait_for(lambda: bool(checkpoint_steps(home)), timeout=300, what="a checkpoint")
        (first,) = [p for p in fake.pods("ty-e2e-1-1") if p["spec"]["hostname"].endswith("-0")]
        fake.evict(first["metadata"]["name"], "The node was low on resource: memory.")
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()

    assert run.returncode == 0, output
    ((state, restarts),) = stored_trials(home, lambda _, t: (t.state, t.num_restarts))
    assert (state, restarts) == (TrialState.COMPLETED, 1), output
    assert "evicted (Evicted: The node was low on resource: memory.)" in output
    job = api.get("jobs", "trials", "ty-e2e-1-2")  # the retry, a new attempt
    assert job is not None and [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    (log,) = home.glob("experiments/*/trials/*/worker.log")
    text = log.read_text()
    for attempt in (1, 2):
        for index in (0, 1):
            assert f"trainyard: pod ty-e2e-1-{attempt}-{index}, index {index} of 2" in text
