"""The Jobs an earlier Master left running, and waiting for their pods to go.

A Master that was killed leaves its trials' Jobs running, their workers holding its tokens;
the Master that resumes the experiment ends them before any of their trials runs again
(`KubernetesExecutor.end_leftover`, and a launch whose Job name is taken). A trial's own
attempts carry its id as a label; a pack's Job carries only its host's, so a member that
joined later leads to it by the worker key stored on it (kubernetes_objects.worker_key).
"""

from __future__ import annotations

import logging
import time

from kubernetes import client

from trainyard.executors.kubernetes_objects import LABEL_PREFIX, worker_key
from trainyard.executors.kubernetes_status import attempt_status

logger = logging.getLogger(__name__)

LEFTOVER_MARGIN_S = 30.0
"""How long the wait for a deleted Job's pods lasts beyond their grace period
(stop_grace_s) before the Master goes on."""


def unfinished_of(jobs: list[client.V1Job], trial_id: int, key: int | None) -> list[client.V1Job]:
    """Those of `jobs` (one experiment's) that have not ended and ran `trial_id`: an attempt
    labelled with it, or the Job whose worker key the trial stored (a pack it joined).
    Finished ones stay until their TTL, with their pods' logs."""
    trial = str(trial_id)

    def ran_it(job: client.V1Job) -> bool:
        labels, uid = job.metadata.labels or {}, job.metadata.uid
        return labels.get(LABEL_PREFIX + "trial") == trial or (
            key is not None and uid is not None and worker_key(uid) == key
        )

    return [job for job in jobs if ran_it(job) and attempt_status(job, []).ending is None]


def highest_attempts(jobs: list[client.V1Job]) -> dict[int, int]:
    """The highest attempt number among `jobs` of each trial they are labelled with. A trial's
    next launch takes the number after it, so its name is not that of a Job just deleted,
    whose Secret and Service the garbage collector deletes after it."""
    highest: dict[int, int] = {}
    for job in jobs:
        labels = job.metadata.labels or {}
        trial = labels.get(LABEL_PREFIX + "trial", "")
        attempt = labels.get(LABEL_PREFIX + "attempt", "")
        if trial.isdigit() and attempt.isdigit():
            highest[int(trial)] = max(highest.get(int(trial), 0), int(attempt))
    return highest


def await_pods_gone(
    core: client.CoreV1Api, namespace: str, jobs: list[str], *, timeout_s: float
) -> None:
    """Wait until the pods of the deleted `jobs` are gone: their workers got SIGTERM and
    their grace period, in which one may still write a checkpoint that the trial's next
    attempt must find finished. Past `timeout_s`, or with an API that does not answer, the
    wait ends with a warning."""
    deadline, pause = time.monotonic() + timeout_s, 0.05
    for job in jobs:
        while True:
            try:
                pods = core.list_namespaced_pod(
                    namespace, label_selector=f"{LABEL_PREFIX}job={job}"
                ).items
            except Exception as err:
                logger.warning("cannot see whether the pods of Job %s ended: %s", job, err)
                return
            if not pods:
                break
            if time.monotonic() > deadline:
                logger.warning("the pods of Job %s still run %.0f s on; going on", job, timeout_s)
                return
            time.sleep(pause)
            pause = min(2 * pause, 1.0)
