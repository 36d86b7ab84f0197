"""What the Kubernetes executor asks the cluster for: every Job, Service and Secret it builds
for trials of 1, 2 and 8 GPUs validates against the schemas of a recent Kubernetes release
(kubernetes-validate, offline from its bundled schemas, strict: no unknown field)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.executors import WorkerLaunch
from trainyard.executors.kubernetes_objects import (
    TrialNames,
    build_job,
    build_secret,
    build_service,
    dns_label,
    manifest,
    multiply_quantity,
)
from trainyard.protocol import PACK_SIZE_ENV, PACK_TOKENS_ENV, PACK_TRIAL_IDS_ENV

KUBERNETES_VERSION = "1.37"
"""The newest schemas kubernetes-validate 1.37 bundles."""
POOL = {
    "namespace": "trials",
    "image": "registry.example.org/trainyard:0.1",
    "gpus_per_pod": 4,
    "cpus_per_gpu": 8,
    "memory_per_gpu": "60Gi",
    "shm_size": "16Gi",
    "max_pods": 4,
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "priority_class": "trainyard-trials",
    "kueue_queue": "hep-ml",
    "service_account": "trainyard-trial",
    "image_pull_secrets": ["registry"],
    "extra_resources": {"nvidia.com/rdma_shared_device_a": 1},
    "capabilities": ["IPC_LOCK"],
    "pod_annotations": {"k8s.v1.cni.cncf.io/networks": "trials/sriov-ib"},
    "pod_spec": {"hostIPC": False, "dnsPolicy": "ClusterFirst"},
    "volumes": {
        "data": {"claim": "trainyard-data", "mount_path": "/var/lib/trainyard"},
        "staging": {"host_path": "/mnt/nvme", "mount_path": "/var/lib/trainyard/cache/staged"},
    },
}
TOKEN = "tyw_secret-token"


def _objects(num_slots: int, pack: bool = False, **pool: Any) -> tuple[dict, dict, dict]:
    spec = KubernetesPoolSpec.model_validate({**POOL, **pool})
    names = TrialNames(dns_label("ParticleNet top_tagging"), trial_id=12, attempt=2)
    env = {
        "TRAINYARD_TOKEN": TOKEN,
        "TRAINYARD_TRIAL_ID": "12",
        "TRAINYARD_MASTER_URL": "http://m",
    }
    if pack:  # as the runner's `_launch` sets them for a pack of three
        env |= {
            PACK_TRIAL_IDS_ENV: "12,13,14",
            PACK_TOKENS_ENV: f"{TOKEN},tyw_second,tyw_third",
            PACK_SIZE_ENV: "8",
        }
    launch = WorkerLaunch(
        trial_id=12, num_slots=num_slots, log_path=Path("/var/lib/trainyard/t/w.log"), env=env
    )
    job = manifest(build_job(spec, names, launch, experiment_name="ParticleNet top_tagging"), spec)
    return (
        job,
        manifest(build_service(names, "trials")),
        manifest(build_secret(names, launch, "trials")),
    )


@pytest.mark.parametrize(("num_slots", "pods", "ranks"), [(1, 1, 1), (2, 1, 2), (8, 2, 4)])
def test_every_object_of_1_2_and_8_gpu_trials_validates(
    num_slots: int, pods: int, ranks: int
) -> None:
    for obj in _objects(num_slots):
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    job = _objects(num_slots)[0]
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (pods, pods, 0)
    assert (
        spec["completionMode"] == "Indexed"
        and spec["template"]["spec"]["restartPolicy"] == "Never"
    )
    (container,) = spec["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(ranks)
    assert container["resources"]["limits"]["memory"] == f"{60 * ranks}Gi"
    assert (
        f"--nnodes={pods}" in container["args"]
        and f"--nproc-per-node={ranks}" in container["args"]
    )


def test_a_packs_job_and_secret_validate_with_every_credential_in_the_secret() -> None:
    job, service, secret = _objects(1, pack=True)
    for obj in (job, service, secret):
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert job["metadata"]["annotations"]["trainyard.io/pack-trials"] == "12,13,14"
    assert "tyw_" not in json.dumps(job)
    assert secret["stringData"] == {
        "token": TOKEN,
        "pack-tokens": f"{TOKEN},tyw_second,tyw_third",
    }
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env[PACK_TRIAL_IDS_ENV]["value"] == "12,13,14"
    assert env[PACK_TOKENS_ENV]["valueFrom"]["secretKeyRef"]["key"] == "pack-tokens"


def test_a_cpu_pool_and_a_script_trial_validate() -> None:
    spec = KubernetesPoolSpec.model_validate({**POOL, "gpus_per_pod": 0, "ranks_per_pod": 2})
    launch = WorkerLaunch(
        trial_id=3,
        num_slots=4,
        log_path=Path("/l"),
        env={"TRAINYARD_TOKEN": TOKEN},
        command=("python", "train.py", "--fast"),
        workdir=Path("/var/lib/trainyard/code"),
    )
    job = manifest(build_job(spec, TrialNames("e", 3, 1), launch, experiment_name="e"), spec)
    assert kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["args"][-4:] == ["--no-python", "python", "train.py", "--fast"]
    assert container["workingDir"] == "/var/lib/trainyard/code"


def test_pods_rendezvous_at_the_first_pod_of_the_headless_service() -> None:
    job, service, secret = _objects(8)
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert (
        env["MASTER_ADDR"]["value"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    )
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in pod["containers"][0]["args"]
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env["TRAINYARD_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "token",
    }
    assert TOKEN not in json.dumps(job) and secret["stringData"] == {"token": TOKEN}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod[
        "volumes"
    ]
    assert pod["hostIPC"] is False  # the pool's own pod_spec fields are merged in


def test_labels_name_experiment_trial_and_attempt_and_kueue_queue() -> None:
    job = _objects(1)[0]
    assert job["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "trainyard",
        "trainyard.io/experiment": f"particlenet-top-tagging-{_digest('ParticleNet top_tagging')}",
        "trainyard.io/trial": "12",
        "trainyard.io/attempt": "2",
        "kueue.x-k8s.io/queue-name": "hep-ml",
    }
    assert job["metadata"]["annotations"] == {
        "trainyard.io/experiment-name": "ParticleNet top_tagging"
    }
    assert (
        job["metadata"]["name"]
        == f"ty-particlenet-top-tagging-{_digest('ParticleNet top_tagging')}-12-2"
    )


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:6]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("toptag", "toptag"),
        (
            "ParticleNet top_tagging",
            f"particlenet-top-tagging-{_digest('ParticleNet top_tagging')}",
        ),
        ("a" * 40, f"{'a' * 23}-{_digest('a' * 40)}"),
        ("__", f"x-{_digest('__')}"),
    ],
)
def test_experiment_names_become_dns_1123_labels_that_stay_distinct(name: str, label: str) -> None:
    assert dns_label(name) == label
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": label}}
    assert kubernetes_validate.validate(namespace, KUBERNETES_VERSION, strict=True)
    assert dns_label("top tagging") != dns_label("top_tagging")


def test_quantities_multiply_in_their_unit() -> None:
    assert [multiply_quantity(q, n) for q, n in [("32Gi", 2), ("0.5", 3), ("500M", 4)]] == [
        "64Gi",
        "1.5",
        "2000M",
    ]
