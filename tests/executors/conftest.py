"""Fixtures of the Kubernetes executor's tests: the fake API over HTTP, its controllers, and
executors of one pool on it (tests/executors/kube_fake)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.executors.kube_fake.api import FakeKubernetes
from tests.executors.kube_fake.cluster import FakeCluster, write_kubeconfig
from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.executors.kubernetes import KubernetesExecutor

NS = "trials"


@pytest.fixture
def api() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def cluster(api: FakeKubernetes) -> Iterator[FakeCluster]:
    fake = FakeCluster(api)
    yield fake
    fake.close()


@pytest.fixture
def make_executor(
    api: FakeKubernetes, tmp_path: Path
) -> Iterator[Callable[..., KubernetesExecutor]]:
    made: list[KubernetesExecutor] = []

    def make(*, experiment: str = "exp", **fields: Any) -> KubernetesExecutor:
        spec = {
            "kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", api)),
            "namespace": NS,
            "image": "registry.example.org/trainyard:0.1",
            "gpus_per_pod": 1,
            "max_pods": 8,
            "volumes": {"data": {"claim": "data", "mount_path": str(tmp_path)}},
            **fields,
        }
        executor = KubernetesExecutor(
            pool="k8s",
            spec=KubernetesPoolSpec.model_validate(spec),
            experiment=experiment,
            source="facility file f.yaml",
        )
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
