"""The Kubernetes executor against a stateful fake of the API over real HTTP
(tests/executors/kube_fake): the official client, its watch streams and its errors are the
real ones; the cluster's behaviour (pod phases, evictions, an image that cannot be pulled) is
injected as a cluster would show it. No real cluster is reached by these tests."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.executors.conftest import NS
from tests.executors.kube_fake.api import FakeKubernetes, Obj
from tests.executors.kube_fake.cluster import FakeCluster, container_status, write_kubeconfig
from trainyard.config.facility import parse_facility
from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.config.schema import ResourcesSpec
from trainyard.errors import ConfigError, ExecutorError
from trainyard.executors import WorkerLaunch
from trainyard.executors.kubernetes import KubernetesExecutor
from trainyard.executors.kubernetes_api import API_RULES
from trainyard.executors.kubernetes_status import EXIT_CODES, Cause
from trainyard.executors.pools import executor_for_pool

TOKEN = "tyw_not-in-any-pod-spec"
ROLE = Path(__file__).parents[2] / "deploy" / "kubernetes" / "base" / "trial-rbac.yaml"


def _launch(executor: KubernetesExecutor, tmp_path: Path, num_slots: int = 1) -> None:
    env = {"TRAINYARD_TOKEN": TOKEN, "TRAINYARD_TRIAL_ID": "7"}
    log = tmp_path / "trial" / "worker.log"
    executor.launch(WorkerLaunch(trial_id=7, num_slots=num_slots, log_path=log, env=env))


def _until(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Poll `check` until it returns something other than None (the timeout guards hangs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{check} stayed None for {timeout_s} s")


def _pods(cluster: FakeCluster, count: int) -> list[Obj]:
    pods = _until(lambda: cluster.pods("ty-exp-7-1", NS) or None)
    assert len(pods) == count
    return sorted(pods, key=lambda p: p["spec"]["hostname"])


def _end(cluster: FakeCluster, pod: Obj, code: int, ended: str = "Error", **status: Any) -> None:
    """The pod's container terminated with `code` (reason `ended`), `status` merged in."""
    terminated = {"exitCode": code, "reason": ended}
    statuses = [container_status({"terminated": terminated})]
    phase = "Succeeded" if code == 0 else "Failed"
    cluster.set_pod(
        pod["metadata"]["name"], NS, {"phase": phase, "containerStatuses": statuses, **status}
    )


def test_a_trial_is_a_suspended_job_then_its_secret_service_and_resume(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path, num_slots=2)
    job = api.get("jobs", NS, "ty-exp-7-1")
    assert job is not None and job["spec"]["suspend"] is False
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (2, 2)
    for resource, name in (("secrets", "ty-exp-7-1-credential"), ("services", "ty-exp-7-1")):
        (owner,) = api.get(resource, NS, name)["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])
    assert TOKEN not in json.dumps(job)  # the credential is read from the Secret only
    assert executor.free_slots() == 6 and executor.running() == [7]
    pods = _pods(cluster, 2)
    assert [p["spec"]["hostname"] for p in pods] == ["ty-exp-7-1-0", "ty-exp-7-1-1"]
    assert executor.poll(7) is None and executor.waiting(7)
    for pod in pods:
        cluster.set_pod(pod["metadata"]["name"], NS, {"phase": "Running"})
    _until(lambda: None if executor.waiting(7) else True)
    for pod in pods:
        _end(cluster, pod, 0, ended="Completed")
    assert _until(lambda: executor.poll(7)) == 0
    assert executor.running() == [] and executor.free_slots() == 8


def test_a_failed_pod_ends_the_attempt_with_its_exit_status(
    cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path, num_slots=2)
    pods = _pods(cluster, 2)
    _end(cluster, pods[1], 3)
    code = _until(lambda: executor.poll(7))
    assert code == 3
    assert executor.describe_exit(7, code) == (
        f"Kubernetes pod {pods[1]['metadata']['name']}: worker exited with code 3 without "
        "reporting an outcome"
    )


@pytest.mark.parametrize(
    ("status", "cause", "words"),
    [
        (
            {"reason": "Evicted", "message": "The node was low on resource: memory."},
            Cause.EVICTED,
            "evicted (Evicted: The node was low on resource: memory.)",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "Preempted in order to admit critical pod",
                    }
                ]
            },
            Cause.PREEMPTED,
            "preempted (PreemptionByScheduler: Preempted in order to admit critical pod)",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                        "message": "Taint manager: deleting due to NoExecute taint",
                    }
                ]
            },
            Cause.NODE_LOST,
            "node lost (DeletionByTaintManager: Taint manager: deleting due to NoExecute taint)",
        ),
    ],
)
def test_evictions_preemptions_and_lost_nodes_are_named_with_their_reason(
    cluster: FakeCluster,
    make_executor: Callable,
    tmp_path: Path,
    status: Obj,
    cause: Cause,
    words: str,
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    _end(cluster, pod, 143, **status)
    code = _until(lambda: executor.poll(7))
    assert code == EXIT_CODES[cause]
    assert executor.describe_exit(7, code).endswith(words)


def test_oom_killed_says_which_pool_key_to_raise(
    cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    _end(cluster, pod, 137, ended="OOMKilled")
    code = _until(lambda: executor.poll(7))
    assert code == EXIT_CODES[Cause.OOM_KILLED]
    assert "OOMKilled (OOMKilled); raise `memory_per_gpu` of pool 'k8s'" in executor.describe_exit(
        7, code
    )


def test_an_image_that_cannot_be_pulled_ends_the_attempt_with_the_pods_event(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    pulled = "Failed to pull image registry.example.org/trainyard:0.1: not found"
    cluster.event(pod, "Failed", pulled)
    waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
    statuses = [container_status({"waiting": waiting})]
    cluster.set_pod(
        pod["metadata"]["name"], NS, {"phase": "Pending", "containerStatuses": statuses}
    )
    code = _until(lambda: executor.poll(7))
    assert code == EXIT_CODES[Cause.IMAGE_PULL]
    assert executor.describe_exit(7, code) == (
        f"Kubernetes pod {pod['metadata']['name']}: image cannot be pulled (Failed: {pulled}); "
        "check `image` and `image_pull_secrets` of pool 'k8s'"
    )
    assert ("jobs", "ty-exp-7-1") in [(r, n) for r, n, _ in api.deletions]


def test_an_unschedulable_pod_waits_with_the_schedulers_message(
    cluster: FakeCluster, make_executor: Callable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unscheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    cluster.set_pod(
        pod["metadata"]["name"], NS, {"conditions": [{**unscheduled, "message": message}]}
    )
    caplog.set_level("INFO")
    _until(lambda: True if executor.waiting(7) and message in caplog.text else None)
    assert executor.poll(7) is None
    assert f"trial 7 waits: {message}" in caplog.text


def test_a_kueue_pool_leaves_the_job_suspended_for_kueue(
    api: FakeKubernetes, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor(kueue_queue="hep-ml")
    _launch(executor, tmp_path)
    job = api.get("jobs", NS, "ty-exp-7-1")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "hep-ml"
    assert executor.waiting(7) and ("patch", "batch", "jobs") not in api.requests


def test_watch_lists_again_after_410_gone_and_after_the_api_was_down(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    lists = sum(r == ("list", "", "pods") for r in api.requests)
    api.compact()
    _until(lambda: sum(r == ("list", "", "pods") for r in api.requests) > lists or None)
    api.stop()
    assert executor.poll(7) is None  # the last picture holds while the API is away
    api.start()  # same port
    _end(cluster, pod, 0, ended="Completed")
    assert _until(lambda: executor.poll(7)) == 0


@pytest.mark.parametrize("finished", [False, True])
def test_a_taken_name_is_an_earlier_masters_attempt_and_the_next_number_is_used(
    api: FakeKubernetes,
    cluster: FakeCluster,
    make_executor: Callable,
    tmp_path: Path,
    finished: bool,
) -> None:
    """An unfinished earlier attempt is deleted (its workers hold the old Master's token);
    a finished one stays until its TTL."""
    _launch(make_executor(), tmp_path)  # an earlier Master's attempt 1
    if finished:
        (pod,) = _pods(cluster, 1)
        _end(cluster, pod, 0, ended="Completed")
    executor = make_executor()
    _launch(executor, tmp_path)
    assert api.get("jobs", NS, "ty-exp-7-2") is not None
    deleted = ("jobs", "ty-exp-7-1") in [(r, n) for r, n, _ in api.deletions]
    assert deleted is not finished
    assert executor.running() == [7]


def test_stop_gives_the_grace_period_and_kill_deletes_at_once(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor(stop_grace_s=90)
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    cluster.set_pod(pod["metadata"]["name"], NS, {"phase": "Running"})
    executor.stop(7)
    (stop,) = [o for r, n, o in api.deletions if r == "jobs"]
    assert (stop["gracePeriodSeconds"], stop["propagationPolicy"]) == ("90", "Foreground")
    executor.kill(7)
    kill = [o for r, n, o in api.deletions if r == "jobs"][-1]
    assert (kill["gracePeriodSeconds"], kill["propagationPolicy"]) == ("0", "Background")
    assert [o["gracePeriodSeconds"] for r, n, o in api.deletions if r == "pods"] == ["0"]
    assert _until(lambda: executor.poll(7)) == -9
    assert executor.describe_exit(7, -9).endswith("worker was killed by signal SIGKILL")


def test_end_leftover_deletes_the_trials_jobs_of_an_earlier_master(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    _launch(make_executor(), tmp_path)
    make_executor().end_leftover(7, worker_key=None)
    assert _until(lambda: None if api.get("jobs", NS, "ty-exp-7-1") else True)


def test_a_namespace_the_identity_cannot_write_says_what_to_grant(
    api: FakeKubernetes, make_executor: Callable
) -> None:
    api.forbidden.add(NS)
    with pytest.raises(ExecutorError) as caught:
        make_executor().check(1)
    message = str(caught.value)
    assert (
        f"the Kubernetes API at {api.url} refused to create jobs in namespace 'trials'" in message
    )
    assert 'User "system:serviceaccount:trainyard:trainyard" cannot create resource "jobs"' in (
        message
    )
    assert (
        "a Role in namespace 'trials' with verbs [create] on jobs in API group 'batch', as "
        "deploy/kubernetes/base/trial-rbac.yaml does, bound by a RoleBinding"
    ) in message


def test_an_unreachable_api_is_named_with_what_to_check(
    api: FakeKubernetes, make_executor: Callable, tmp_path: Path
) -> None:
    executor = make_executor()
    api.stop()
    with pytest.raises(ExecutorError) as caught:
        _launch(executor, tmp_path)
    assert f"cannot reach the Kubernetes API at {api.url} (pool 'k8s') to create jobs" in str(
        caught.value
    )
    assert "`kubectl get pods -n trials` works with the same kubeconfig" in str(caught.value)


def test_a_missing_kubeconfig_or_unknown_context_is_a_config_error(
    make_executor: Callable, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_executor(kubeconfig=str(tmp_path / "nope"))
    assert (
        f"`pools.k8s.kubernetes.kubeconfig`: no such file: {tmp_path / 'nope'} (pool 'k8s'); "
        "set the pool's kubeconfig or KUBECONFIG"
    ) in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        make_executor(context="fak")
    assert "`pools.k8s.kubernetes.context`: kubeconfig " in str(
        caught.value
    ) and "has no context 'fak'; did you mean 'fake'? contexts: fake" in str(caught.value)


def test_pod_spec_fields_and_trial_shape_are_checked_before_queueing(
    make_executor: Callable,
) -> None:
    with pytest.raises(ConfigError, match=r"pod_spec.hostNetwrk`: not a field of a pod spec; "):
        make_executor(pod_spec={"hostNetwrk": True}).check(1)
    with pytest.raises(ConfigError) as caught:
        make_executor(gpus_per_pod=4, max_pods=4, max_pods_per_trial=2).check(12)
    assert (
        "`resources.slots_per_trial`: 12 slots per trial need 3 pods of pool 'k8s' (4 slot(s) "
        "per pod in facility file f.yaml) but it gives a trial at most 2; lower "
        "slots_per_trial to at most 8"
    ) in str(caught.value)
    with pytest.raises(ConfigError, match="6 slots per trial do not fill whole pods"):
        make_executor(gpus_per_pod=4).check(6)


def test_the_trial_role_grants_exactly_the_verbs_the_executor_uses(
    api: FakeKubernetes, cluster: FakeCluster, make_executor: Callable, tmp_path: Path
) -> None:
    """Every request the executor can make (check, launch, watch, a pod that cannot start,
    stop, kill, a leftover), recorded by the fake, against the Role in deploy/."""
    executor = make_executor()
    executor.check(2)
    _launch(executor, tmp_path)
    (pod,) = _pods(cluster, 1)
    waiting = {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
    cluster.set_pod(
        pod["metadata"]["name"], NS, {"containerStatuses": [container_status(waiting)]}
    )
    _until(lambda: executor.poll(7))
    _launch(executor, tmp_path)
    executor.stop(7)
    executor.kill(7)
    executor.end_leftover(7, worker_key=None)
    used = {key: verbs for key, verbs in api.used().items()}
    declared = {(rule.group, rule.resource): set(rule.verbs) for rule in API_RULES}
    role = next(d for d in yaml.safe_load_all(ROLE.read_text()) if d["kind"] == "Role")
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert used == declared == granted


def test_a_kubernetes_pool_without_the_client_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = {
        "executor": "kubernetes",
        "kubernetes": {
            "namespace": NS,
            "image": "i",
            "volumes": {"data": {"claim": "d", "mount_path": "/d"}},
        },
    }
    facility = parse_facility({"pools": {"k8s": pool}})
    monkeypatch.setitem(sys.modules, "trainyard.executors.kubernetes", None)
    with pytest.raises(ExecutorError) as caught:
        executor_for_pool(
            facility, ResourcesSpec(pool="k8s"), experiment="exp", fork_workers=False
        )
    assert (
        "pool 'k8s' is a Kubernetes pool, which needs the Kubernetes client: pip install "
        "'trainyard[kubernetes]'"
    ) in str(caught.value)


def test_an_experiment_name_that_is_no_dns_label_is_mapped_and_the_mapping_logged(
    api: FakeKubernetes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    spec = {
        "kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", api)),
        "namespace": NS,
        "image": "i",
        "volumes": {"data": {"claim": "d", "mount_path": "/d"}},
    }
    executor = KubernetesExecutor(
        pool="k8s",
        spec=KubernetesPoolSpec.model_validate(spec),
        experiment="Top_Tag v2",
        source="f.yaml",
    )
    try:
        _launch(executor, tmp_path)
    finally:
        executor.close()
    (job,) = [o for (r, _, _), o in api.objects.items() if r == "jobs"]
    label = job["metadata"]["labels"]["trainyard.io/experiment"]
    assert label.startswith("top-tag-v2-") and job["metadata"]["name"] == f"ty-{label}-7-1"
    assert job["metadata"]["annotations"]["trainyard.io/experiment-name"] == "Top_Tag v2"
    assert (
        f"experiment 'Top_Tag v2' is '{label}' in Kubernetes names and labels "
        "(trainyard.io/experiment)"
    ) in caplog.text
