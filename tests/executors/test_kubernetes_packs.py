"""Trial packs on a Kubernetes pool, against the fake API (tests/executors/kube_fake): one Job
of one pod trains the pack, its members' credentials are in the Secret only, and a restarted
Master finds the Job by the worker key it stored on whichever member it reaches. No real
cluster is reached by these tests."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.executors.conftest import NS
from tests.executors.kube_fake.api import FakeKubernetes
from tests.executors.kube_fake.cluster import FakeCluster
from tests.executors.test_kubernetes import _end, _until
from trainyard.executors import WorkerLaunch
from trainyard.executors.kubernetes import KubernetesExecutor
from trainyard.executors.kubernetes_objects import PACK_ANNOTATION, worker_key
from trainyard.protocol import PACK_SIZE_ENV, PACK_TOKENS_ENV, PACK_TRIAL_IDS_ENV

TOKENS = ["tyw_host-secret", "tyw_second-secret", "tyw_third-secret"]


def _launch_pack(executor: KubernetesExecutor, tmp_path: Path, host: int = 7) -> int:
    """A pack of trials host, host+1, host+2 (as the runner's `_launch` builds it); its key."""
    ids = [host, host + 1, host + 2]
    env = {
        "TRAINYARD_MASTER_URL": "http://master:8080",
        "TRAINYARD_TOKEN": TOKENS[0],
        "TRAINYARD_TRIAL_ID": str(host),
        PACK_TRIAL_IDS_ENV: ",".join(map(str, ids)),
        PACK_TOKENS_ENV: ",".join(TOKENS),
        PACK_SIZE_ENV: "4",
    }
    log = tmp_path / f"trial-{host}" / "worker.log"
    executor.launch(WorkerLaunch(trial_id=host, num_slots=1, log_path=log, env=env))
    key = executor.worker_key(host)
    assert key is not None
    return key


def test_a_pack_is_one_job_of_one_pod_whose_secret_alone_holds_the_credentials(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    key = _launch_pack(executor, tmp_path)
    (job,) = api.items("jobs", NS, {})
    assert job["metadata"]["name"] == "ty-exp-7-1"
    assert key == worker_key(job["metadata"]["uid"]) and 0 < key < 2**63
    assert job["metadata"]["annotations"][PACK_ANNOTATION] == "7,8,9"
    assert (job["spec"]["completions"], executor.running(), executor.free_slots()) == (1, [7], 7)
    assert executor.worker_key(8) is None  # the executor knows the pack by its host
    (pod,) = _until(lambda: cluster.pods("ty-exp-7-1", NS) or None)
    for obj in (job, pod):
        assert not any(token in json.dumps(obj) for token in TOKENS)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env[PACK_TRIAL_IDS_ENV]["value"] == "7,8,9" and env[PACK_SIZE_ENV]["value"] == "4"
    refs = {
        name: env[name]["valueFrom"]["secretKeyRef"]
        for name in ("TRAINYARD_TOKEN", PACK_TOKENS_ENV)
    }
    assert {ref["name"] for ref in refs.values()} == {"ty-exp-7-1-credential"}
    secret = api.get("secrets", NS, "ty-exp-7-1-credential")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert stored == {"token": TOKENS[0], "pack-tokens": ",".join(TOKENS)}


@pytest.mark.parametrize("member", [7, 8], ids=["host", "joined"])
def test_end_leftover_deletes_the_pack_job_through_any_member_and_waits_for_its_pod(
    api: FakeKubernetes,
    cluster: FakeCluster,
    make_executor: Callable,
    tmp_path: Path,
    member: int,
) -> None:
    """A member that joined later is in no label of the Job: its stored key finds the Job.
    The pack's next launch is a new attempt, under a name the deleted Job's Secret and
    Service, which the garbage collector deletes after it, cannot still hold."""
    key = _launch_pack(make_executor(), tmp_path)
    (pod,) = _until(lambda: cluster.pods("ty-exp-7-1", NS) or None)
    cluster.set_pod(pod["metadata"]["name"], NS, {"phase": "Running"})
    resumed = make_executor()  # a restarted Master's
    ended = threading.Thread(target=resumed.end_leftover, args=(member, key))
    ended.start()
    _until(lambda: None if api.get("jobs", NS, "ty-exp-7-1") else True)
    ended.join(0.3)
    assert ended.is_alive()  # the pod has its grace period to checkpoint
    _end(cluster, cluster.pods("ty-exp-7-1", NS)[0], 143)
    ended.join(10)
    assert not ended.is_alive() and not cluster.pods("ty-exp-7-1", NS)
    _launch_pack(resumed, tmp_path)  # a new name: the old one's children may linger
    assert api.get("jobs", NS, "ty-exp-7-2") is not None


def test_end_leftover_spares_another_experiments_job_and_a_finished_one(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    other = _launch_pack(make_executor(experiment="other"), tmp_path)
    ours = _launch_pack(make_executor(), tmp_path, host=20)
    (pod,) = _until(lambda: cluster.pods("ty-exp-20-1", NS) or None)
    _end(cluster, pod, 0, ended="Completed")
    _until(lambda: api.get("jobs", NS, "ty-exp-20-1")["status"].get("succeeded"))
    resumed = make_executor()
    resumed.end_leftover(8, other)  # the key of another experiment's pack
    resumed.end_leftover(21, ours)  # our pack's, which has finished
    assert [(r, n) for r, n, _ in api.deletions if r == "jobs"] == []
    assert api.get("jobs", NS, "ty-other-7-1") and api.get("jobs", NS, "ty-exp-20-1")


@pytest.mark.parametrize(("gpus", "kind"), [(1, "cuda"), (0, "cpu")])
def test_the_device_kind_is_what_the_pools_pods_get(
    make_executor: Callable, gpus: int, kind: str
) -> None:
    assert make_executor(gpus_per_pod=gpus).device_kind() == kind
