"""How many trials one worker trains: `resources.pack` against the executor and the device,
and the messages when a pack cannot be started."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.executors.kube_fake.api import FakeKubernetes
from tests.executors.kube_fake.cluster import write_kubeconfig
from trainyard.config import parse_experiment
from trainyard.config.facility import SlurmPoolSpec
from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.errors import ConfigError, TrainyardError
from trainyard.executors import LocalExecutor
from trainyard.executors.kubernetes import KubernetesExecutor
from trainyard.executors.slurm import SlurmExecutor
from trainyard.master.packs import pack_size
from trainyard.protocol import PACK_TOKENS_ENV, PACK_TRIAL_IDS_ENV
from trainyard.worker.client import MasterClient


def _config(pack: object, *, model: str = "particlenet-lite", **resources: Any):
    return parse_experiment(
        {
            "name": "packs",
            "model": model,
            "data": {"train": "a", "val": "b"},
            "hyperparameters": {"lr": {"type": "categorical", "vals": [0.01, 0.1]}},
            "searcher": {"name": "grid"},
            "training": {"max_length": {"batches": 10}},
            "resources": {"pack": pack, **resources},
        }
    )


def _local(gpus: int) -> LocalExecutor:
    return LocalExecutor(gpu_ids=list(range(gpus)), num_cpu_slots=2, threads_per_cpu_slot=1)


def _slurm(**spec: Any) -> SlurmExecutor:
    return SlurmExecutor(
        pool="a100",
        spec=SlurmPoolSpec.model_validate({"partition": "gpu", **spec}),
        experiment="packs",
        source="f.yaml",
    )


@pytest.fixture
def kubernetes(tmp_path: Path) -> Iterator[KubernetesExecutor]:
    """A Kubernetes pool's executor, on the fake API (tests/executors/kube_fake)."""
    api = FakeKubernetes()
    api.start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api)
    volumes = {"data": {"claim": "data", "mount_path": str(tmp_path)}}
    spec = KubernetesPoolSpec.model_validate(
        {"kubeconfig": str(kubeconfig), "namespace": "t", "image": "t", "volumes": volumes}
    )
    executor = KubernetesExecutor(pool="k8s", spec=spec, experiment="packs", source="f.yaml")
    yield executor
    executor.close()
    api.stop()


class _OneTrialPerWorker(LocalExecutor):
    """A backend that has not opted into packs (the `Executor` default): every shipped one
    has, so this one stands for a new backend without a worker key."""

    name = "example"
    runs_packs = False


def test_an_explicit_pack_on_an_executor_without_packs_names_the_way_out() -> None:
    executor = _OneTrialPerWorker(gpu_ids=[], num_cpu_slots=2, threads_per_cpu_slot=1)
    with pytest.raises(ConfigError) as caught:
        pack_size(_config(3), executor)
    assert (
        "`resources.pack`: 3 trials per worker, but the pool `default` runs on the example "
        "executor, which starts one trial per worker; set `resources.pack` to off or auto, or "
        "use a local, SLURM or Kubernetes pool"
    ) in str(caught.value)


def test_off_and_explicit_sizes_are_taken_as_given() -> None:
    assert pack_size(_config("off"), _local(0)) == 1
    assert pack_size(_config(3), _local(0)) == 3
    assert pack_size(_config(3), _slurm(gpus_per_node=4)) == 3


def test_kubernetes_packs_as_given_and_auto_by_what_its_pods_get(
    kubernetes: KubernetesExecutor,
) -> None:
    """The fixture's pool gives each pod one GPU (the default gpus_per_pod)."""
    assert pack_size(_config(3), kubernetes) == 3
    assert pack_size(_config("auto"), kubernetes) == 8


@pytest.mark.parametrize(("gpus", "size"), [(4, 8), (0, 1)])
def test_auto_packs_on_slurm_by_what_the_pools_jobs_get(gpus: int, size: int) -> None:
    """A SLURM pool's slots are GPUs when its jobs ask for them (`gpus_per_node`), else CPUs."""
    spec = {"gpus_per_node": gpus} if gpus else {"tasks_per_node": 2}
    assert pack_size(_config("auto"), _slurm(**spec)) == size


@pytest.mark.parametrize(
    ("model", "gpus", "size", "why"),
    [
        ("particlenet-lite", 1, 8, "particlenet-lite on cuda gains from packing"),
        ("particlenet-lite", 0, 1, "no measured gain for particlenet-lite on cpu"),
        ("particlenet", 1, 1, "no measured gain for particlenet on cuda"),
        (
            "particle-transformer",
            1,
            1,
            "particle-transformer is called as forward(features, vectors, mask), which packs "
            "do not feed",
        ),
        ("pfn", 1, 1, "pfn is called as forward(features, mask), which packs do not feed"),
    ],
)
def test_auto_packs_only_where_the_benchmark_measured_a_gain(
    model: str, gpus: int, size: int, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trainyard.master.packs"):
        assert pack_size(_config("auto", model=model), _local(gpus)) == size
    assert f"resources.pack: auto -> {size} ({why}" in caplog.text


def test_auto_does_not_pack_what_cannot_be_packed(caplog: pytest.LogCaptureFixture) -> None:
    executor = _OneTrialPerWorker(gpu_ids=[0], num_cpu_slots=2, threads_per_cpu_slot=1)
    with caplog.at_level(logging.INFO, logger="trainyard.master.packs"):
        assert pack_size(_config("auto", slots_per_trial=2), _local(2)) == 1
        assert pack_size(_config("auto"), executor) == 1
    assert "this experiment cannot be packed (`resources.pack`: 8 trials" in caplog.text
    assert "the example executor starts one trial per worker" in caplog.text


def test_a_worker_with_mismatched_pack_variables_says_who_starts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PACK_TRIAL_IDS_ENV, "4,5")
    monkeypatch.setenv(PACK_TOKENS_ENV, "tyw_a")
    with pytest.raises(TrainyardError) as caught:
        MasterClient.pack_from_env()
    assert str(caught.value) == (
        "TRAINYARD_PACK_TRIAL_IDS and TRAINYARD_PACK_TOKENS must list as many trial ids as "
        "credentials: trainyard.worker is started by an executor (trainyard run), not by hand"
    )
