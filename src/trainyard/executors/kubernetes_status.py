"""From a trial's Job and pods, as the API last showed them, to where its attempt stands.

Pure functions of the client's typed objects, so every condition a user meets can be tested
by building the pod that shows it: waiting (suspended for Kueue, Pending, Unschedulable),
running, or ended, and why: the worker's exit status, or one of Kubernetes' own ends (an image
that cannot be pulled, OOMKilled, Evicted, preempted, a lost node), each with its reason and
message as the cluster wrote them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import StrEnum

from kubernetes import client

from trainyard.executors.base import INFRASTRUCTURE_EXIT
from trainyard.executors.kubernetes_objects import INDEX_ANNOTATION


class Cause(StrEnum):
    """Ends that Kubernetes causes; each has an exit code of its own (EXIT_CODES)."""

    IMAGE_PULL = "image cannot be pulled"
    CONTAINER_CONFIG = "container cannot be created"
    OOM_KILLED = "OOMKilled"
    EVICTED = "evicted"
    PREEMPTED = "preempted"
    NODE_LOST = "node lost"
    JOB_FAILED = "Job failed"
    VANISHED = "Job deleted"


EXIT_CODES = {cause: INFRASTRUCTURE_EXIT + 1 + i for i, cause in enumerate(Cause)}
"""poll's code for each end that Kubernetes caused."""

_IMAGE_PULL = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG = {"CreateContainerConfigError", "CreateContainerError"}
_DISRUPTIONS = {
    "PreemptionByScheduler": Cause.PREEMPTED,
    "PreemptionByKubeScheduler": Cause.PREEMPTED,
    "EvictionByEvictionAPI": Cause.EVICTED,
    "DeletionByTaintManager": Cause.NODE_LOST,
    "DeletionByPodGC": Cause.NODE_LOST,
    "TerminationByKubelet": Cause.NODE_LOST,
}
"""The reasons of a pod's DisruptionTarget condition (Kubernetes >= 1.26)."""


@dataclass(frozen=True)
class Ending:
    """Why an attempt ended: a worker's exit status or a Kubernetes cause, and where."""

    code: int
    pod: str = ""
    node: str = ""
    cause: Cause | None = None
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class AttemptStatus:
    """Where an attempt stands: waiting, running, or ended (with `ending`)."""

    waiting: bool = False
    why_waiting: str = ""
    """The scheduler's or Kueue's message while waiting (e.g. 0/4 nodes are available)."""
    ending: Ending | None = None


def attempt_status(job: client.V1Job | None, pods: list[client.V1Pod]) -> AttemptStatus:
    """The attempt's state from its Job (None once deleted) and every pod it had.

    A pod that shows a Kubernetes cause ends the attempt even while the Job has not failed
    (an image that cannot be pulled never fails a Job by itself); otherwise the Job's Complete
    or Failed condition does, with the first failed pod's exit status.
    """
    pods = sorted(pods, key=_index)
    for pod in pods:
        ending = _kubernetes_cause(pod)
        if ending is not None:
            return AttemptStatus(ending=ending)
    if job is None or _condition(job, "Complete") or _condition(job, "Failed"):
        return AttemptStatus(ending=_job_ending(job, pods))
    if job.spec.suspend and not pods:
        return AttemptStatus(waiting=True, why_waiting="suspended (waiting for admission)")
    for pod in pods:
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.status == "False":
            return AttemptStatus(waiting=True, why_waiting=scheduled.message or scheduled.reason)
    if not pods or all(p.status is None or p.status.phase == "Pending" for p in pods):
        return AttemptStatus(waiting=True, why_waiting="pods pending")
    return AttemptStatus()


def describe(ending: Ending, *, pool: str) -> str:
    """An ending in words, for the trial's error message, with what to change where."""
    where = f"Kubernetes pod {ending.pod}" if ending.pod else "Kubernetes Job"
    where += f" on node {ending.node}" if ending.node else ""
    said = f" ({ending.reason}: {ending.message})" if ending.message else ""
    said = said or (f" ({ending.reason})" if ending.reason else "")
    if ending.cause is None:
        if ending.code < 0:
            return f"{where}: worker was killed by signal {signal.Signals(-ending.code).name}"
        return f"{where}: worker exited with code {ending.code} without reporting an outcome"
    hints = {
        Cause.IMAGE_PULL: f"; check `image` and `image_pull_secrets` of pool {pool!r}",
        Cause.OOM_KILLED: f"; raise `memory_per_gpu` of pool {pool!r}",
        Cause.CONTAINER_CONFIG: f"; check `volumes` and `service_account` of pool {pool!r}",
    }
    return f"{where}: {ending.cause.value}{said}{hints.get(ending.cause, '')}"


def _kubernetes_cause(pod: client.V1Pod) -> Ending | None:
    status = pod.status
    if status is None:
        return None
    name, node = pod.metadata.name, (pod.spec.node_name if pod.spec else None) or ""
    if status.reason in ("Evicted", "NodeLost"):
        cause = Cause.EVICTED if status.reason == "Evicted" else Cause.NODE_LOST
        return Ending(EXIT_CODES[cause], name, node, cause, status.reason, status.message or "")
    disruption = _pod_condition(pod, "DisruptionTarget")
    if disruption is not None and disruption.status == "True" and status.phase == "Failed":
        cause = _DISRUPTIONS.get(disruption.reason or "", Cause.EVICTED)
        message = disruption.message or ""
        return Ending(EXIT_CODES[cause], name, node, cause, disruption.reason or "", message)
    for container in status.container_statuses or []:
        state = container.state
        waiting = state.waiting if state else None
        if waiting is not None and waiting.reason in _IMAGE_PULL | _CONFIG:
            cause = Cause.IMAGE_PULL if waiting.reason in _IMAGE_PULL else Cause.CONTAINER_CONFIG
            message = waiting.message or ""
            return Ending(EXIT_CODES[cause], name, node, cause, waiting.reason, message)
        ended = state.terminated if state else None
        if ended is not None and ended.reason == "OOMKilled":
            cause = Cause.OOM_KILLED
            return Ending(EXIT_CODES[cause], name, node, cause, ended.reason, ended.message or "")
    return None


def _job_ending(job: client.V1Job | None, pods: list[client.V1Pod]) -> Ending:
    """A finished or deleted Job: 0 when complete, else the first failed pod's exit status."""
    if job is not None and _condition(job, "Complete"):
        return Ending(0)
    for pod in pods:
        terminated = _terminated(pod)
        if terminated is not None and terminated.exit_code != 0:
            node = (pod.spec.node_name if pod.spec else None) or ""
            return Ending(_exit_status(terminated.exit_code), pod.metadata.name, node)
    if job is None:
        codes = [t.exit_code for t in map(_terminated, pods) if t is not None]
        if pods and len(codes) == len(pods):  # every pod ended before the Job went
            return Ending(max(codes, key=abs))
        return Ending(EXIT_CODES[Cause.VANISHED], cause=Cause.VANISHED)
    failed = _condition(job, "Failed")
    reason, message = (failed.reason or "", failed.message or "") if failed else ("", "")
    cause = Cause.JOB_FAILED
    return Ending(EXIT_CODES[cause], cause=cause, reason=reason, message=message)


def _exit_status(code: int) -> int:
    """A container's exit code; 128 + N (a shell's way of saying signal N) as -N."""
    return -(code - 128) if 128 < code < 128 + 65 else code


def _terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated | None:
    for container in (pod.status.container_statuses if pod.status else None) or []:
        if container.state is not None and container.state.terminated is not None:
            return container.state.terminated
    return None


def _condition(job: client.V1Job, kind: str) -> client.V1JobCondition | None:
    conditions = (job.status.conditions if job.status else None) or []
    return next((c for c in conditions if c.type == kind and c.status == "True"), None)


def _pod_condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    conditions = (pod.status.conditions if pod.status else None) or []
    return next((c for c in conditions if c.type == kind), None)


def _index(pod: client.V1Pod) -> int:
    annotations = pod.metadata.annotations or {}
    return int(annotations.get(INDEX_ANNOTATION, "0"))
