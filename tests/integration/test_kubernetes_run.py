"""`trainyard run` on a Kubernetes pool, end to end against the fake API
(tests/executors/kube_fake) whose kubelet starts each pod's command as a local process: the
runner launches a trial of 2 ranks as a Job of 2 pods, torchrun in each pod meets the other at
the first pod (the fake's DNS is this machine), rank 0 reports to the Master, and the Job's
completion ends the trial. The same experiment file validates on a local and a SLURM pool.
No real cluster: what a real one adds (scheduling, images, the network) is not exercised."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.executors.kube_fake.api import FakeKubernetes
from tests.executors.kube_fake.cluster import FakeCluster, write_kubeconfig
from tests.integration.helpers import cli_env, experiment, run_cli, stored_trials
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


def test_a_two_pod_trial_trains_and_completes_on_a_kubernetes_pool(
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
    config["training"].update(max_length={"batches": 10}, validation_period={"batches": 10})
    config["checkpoint"] = {"period": {"batches": 10}, "keep": 1}
    file = tmp_path / "e2e.yaml"
    file.write_text(yaml.safe_dump(config))
    loaded = load_experiment(file)
    for name in ("k8s", "gpu", "default"):  # one experiment file, any kind of pool
        load_facility(facility).pool(name)
    assert loaded.resources.pool == "k8s"

    result = run_cli(["run", str(file)], cli_env(home, TRAINYARD_FACILITY=str(facility)))

    assert result.returncode == 0, result.stdout + result.stderr
    (state,) = stored_trials(home, lambda _, trial: trial.state)
    assert state == TrialState.COMPLETED
    (job,) = [o for (r, _, _), o in api.objects.items() if r == "jobs"]
    assert job["metadata"]["labels"]["trainyard.io/trial"] == "1"
    assert [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    assert len(fake.processes) == 2 and all(p.returncode == 0 for p in fake.processes.values())
    (log,) = home.glob("experiments/*/trials/*/worker.log")
    text = log.read_text()
    assert "trainyard: pod ty-e2e-1-1-0, index 0 of 2" in text
    assert "trainyard: pod ty-e2e-1-1-1, index 1 of 2" in text
