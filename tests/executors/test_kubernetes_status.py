"""Each way an attempt ends on Kubernetes, in words: built from the client's typed objects as
the API would show them, and the API's refusals as the executor reports them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.errors import ExecutorError
from trainyard.executors.kubernetes_api import api_failure, connect
from trainyard.executors.kubernetes_status import EXIT_CODES, Cause, attempt_status, describe

SPEC = KubernetesPoolSpec.model_validate(
    {"namespace": "trials", "image": "i", "volumes": {"data": {"claim": "d", "mount_path": "/d"}}}
)


def _job(*conditions: tuple[str, str, str], suspend: bool = False) -> client.V1Job:
    status = client.V1JobStatus(
        conditions=[
            client.V1JobCondition(type=kind, status="True", reason=reason, message=message)
            for kind, reason, message in conditions
        ]
    )
    return client.V1Job(
        metadata=client.V1ObjectMeta(name="ty-e-1-1"),
        spec=client.V1JobSpec(template=client.V1PodTemplateSpec(), suspend=suspend),
        status=status,
    )


def _pod(phase: str, **state: Any) -> client.V1Pod:
    container = client.V1ContainerStatus(
        name="worker", image="i", image_id="", ready=False, restart_count=0,
        state=client.V1ContainerState(**state),
    )  # fmt: skip
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="ty-e-1-1-0-abcde", annotations={}),
        spec=client.V1PodSpec(containers=[], node_name="gpu-07"),
        status=client.V1PodStatus(phase=phase, container_statuses=[container]),
    )


def test_a_container_that_cannot_be_created_names_volumes_and_service_account() -> None:
    waiting = client.V1ContainerStateWaiting(
        reason="CreateContainerConfigError", message='secret "x" not found'
    )
    ending = attempt_status(_job(), [_pod("Pending", waiting=waiting)]).ending
    assert ending is not None and ending.code == EXIT_CODES[Cause.CONTAINER_CONFIG]
    assert describe(ending, pool="k8s") == (
        "Kubernetes pod ty-e-1-1-0-abcde on node gpu-07: container cannot be created "
        '(CreateContainerConfigError: secret "x" not found); check `volumes` and '
        "`service_account` of pool 'k8s'"
    )


def test_a_failed_job_without_a_failed_pod_and_a_deleted_job_are_named() -> None:
    failed = _job(("Failed", "DeadlineExceeded", "Job was active longer than specified"))
    ending = attempt_status(failed, []).ending
    assert ending is not None
    assert describe(ending, pool="k8s") == (
        "Kubernetes Job: Job failed (DeadlineExceeded: Job was active longer than specified)"
    )
    running = client.V1ContainerStateRunning()
    gone = attempt_status(None, [_pod("Running", running=running)]).ending
    assert gone is not None and describe(gone, pool="k8s") == "Kubernetes Job: Job deleted"


def test_waiting_for_kueue_and_a_signal_as_an_exit_status() -> None:
    status = attempt_status(_job(suspend=True), [])
    assert status.waiting and status.why_waiting == "suspended (waiting for admission)"
    terminated = client.V1ContainerStateTerminated(exit_code=143, reason="Error")
    ending = attempt_status(_job(("Failed", "", "")), [_pod("Failed", terminated=terminated)])
    assert ending.ending is not None and ending.ending.code == -15
    assert describe(ending.ending, pool="k8s").endswith("worker was killed by signal SIGTERM")


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (
            404,
            '{"message": "namespaces \\"trials\\" not found"}',
            "namespace 'trials' of pool 'k8s' does not exist at http://api:6443: namespaces "
            '"trials" not found; create it (`kubectl create namespace trials`)',
        ),
        (
            422,
            '{"message": "Job.batch is invalid: spec.template.spec.hostNetwork: bad"}',
            "the Kubernetes API at http://api:6443 refused to create jobs in namespace 'trials' "
            "(pool 'k8s'): HTTP 422: Job.batch is invalid: spec.template.spec.hostNetwork: bad",
        ),
    ],
)
def test_other_refusals_carry_the_apis_message(status: int, body: str, words: str) -> None:
    api = client.ApiClient(client.Configuration(host="http://api:6443"))
    err = ApiException(status=status, reason="x")
    err.body = body
    assert words in str(api_failure(err, action="create jobs", spec=SPEC, api=api, pool="k8s"))


def test_in_cluster_outside_a_pod_says_where_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = SPEC.model_copy(update={"in_cluster": True})
    with pytest.raises(ExecutorError) as caught:
        connect(spec, pool="k8s", source="facility file f.yaml")
    assert (
        "pool 'k8s' has in_cluster: true but this process is not in a Kubernetes pod with a "
        "service account"
    ) in str(caught.value)
