"""Run trials as Kubernetes Jobs: one Indexed Job per attempt, its pods started by torchrun.

Kubernetes places the pods; trainyard only shapes them (kubernetes_objects.py) and follows
them (kubernetes_watch.py, kubernetes_status.py). A launch creates the attempt's Job
suspended, then its Secret and Service as the Job's children (deleted with it), then resumes
the Job; with a Kueue queue, Kueue resumes it when the queue's quota admits it.

Ownership and recovery: Jobs never retry a pod (backoffLimit 0): a failed attempt is retried
from its checkpoint by the runner, like on every other backend, as a new attempt with new
names. Stop deletes the Job in the foreground with the pool's grace period: each pod gets
SIGTERM, the worker checkpoints and reports, and the Job goes once its pods have ended. Kill
deletes it at once (background propagation). An attempt of the same trial left by an earlier
Master (a name that is taken, or `end_leftover` on resume) is deleted before a new one starts,
since its workers hold that Master's token.

Packs (docs/packing.md): a launch whose environment names several trials is one attempt of
one slot (one pod), named after its host trial, whose worker trains them all; the members'
credentials are in its Secret only. Each Job's worker key is a hash of its uid
(kubernetes_objects.worker_key): the runner stores it on every member, and a restarted
Master's `end_leftover` finds the pack's Job by it, through whichever member it reaches first.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.errors import ConfigError, ExecutorError
from trainyard.executors.base import Executor, WorkerLaunch
from trainyard.executors.kubernetes_api import api_failure, connect
from trainyard.executors.kubernetes_leftovers import (
    LEFTOVER_MARGIN_S,
    await_pods_gone,
    highest_attempts,
    unfinished_of,
)
from trainyard.executors.kubernetes_objects import (
    LABEL_PREFIX,
    TrialNames,
    build_job,
    build_secret,
    build_service,
    dns_label,
    experiment_selector,
    manifest,
    pod_layout,
    worker_key,
)
from trainyard.executors.kubernetes_status import Cause, Ending, attempt_status, describe
from trainyard.executors.kubernetes_watch import ClusterState
from trainyard.suggest import did_you_mean

logger = logging.getLogger(__name__)


@dataclass
class _Attempt:
    names: TrialNames
    num_slots: int
    key: int
    killed: bool = False
    why_waiting: str = ""


class KubernetesExecutor(Executor):
    """Submits each trial attempt as an Indexed Job in one pool's namespace and watches it.

    Args:
        pool: the pool's name in the facility file (for messages).
        spec: the pool's `kubernetes:` section.
        experiment: the experiment's name; as a DNS-1123 label it names objects and labels.
        source: where the pool was defined, for messages.
        api: an API client; default: one from the pool's kubeconfig or service account.
    """

    name = "kubernetes"
    runs_packs = True

    def __init__(
        self,
        *,
        pool: str,
        spec: KubernetesPoolSpec,
        experiment: str,
        source: str,
        api: client.ApiClient | None = None,
    ) -> None:
        self._pool, self._spec, self._source = pool, spec, source
        self._experiment = experiment
        self._label = dns_label(experiment)
        if self._label != experiment:
            logger.info(
                "experiment %r is %r in Kubernetes names and labels (%sexperiment)",
                experiment,
                self._label,
                LABEL_PREFIX,
            )
        self._api = api or connect(spec, pool=pool, source=source)
        self._batch = client.BatchV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._state = ClusterState(
            self._api, namespace=spec.namespace, selector=experiment_selector(self._label)
        )
        self._attempts: dict[int, _Attempt] = {}
        self._launches: dict[int, int] = {}
        self._ended: dict[int, Ending] = {}

    def check(self, slots_per_trial: int) -> None:
        """Fail now, before anything is queued, if this pool cannot run such trials: the
        trial's shape, the pool's extra pod-spec fields, and a server-side dry run of the Job
        (the namespace exists, and the pool's identity may create Jobs there).

        Raises:
            ConfigError: the trial does not fit the pool, or pod_spec names an unknown field.
            ExecutorError: the API refuses the Job (403: with what to grant) or is unreachable.
        """
        self._check_shape(slots_per_trial)
        known = set(client.V1PodSpec.attribute_map.values())
        for key in self._spec.pod_spec:
            if key not in known:
                raise ConfigError(
                    [
                        f"`pools.{self._pool}.kubernetes.pod_spec.{key}`: not a field of a "
                        f"pod spec; {did_you_mean(key, known)}see `kubectl explain pod.spec`"
                    ],
                    source=self._source,
                )
        names = TrialNames(self._label, trial_id=0, attempt=0)
        launch = WorkerLaunch(trial_id=0, num_slots=slots_per_trial, log_path=Path("/dev/null"))
        job = manifest(self._job(names, launch), self._spec)
        self._call(
            "create jobs",
            self._batch.create_namespaced_job,
            self._spec.namespace,
            job,
            dry_run="All",
        )

    # -- the Executor contract -----------------------------------------------------------------

    def capacity(self) -> int:
        return self._spec.max_pods * self._spec.slots_per_pod

    def free_slots(self) -> int:
        return self.capacity() - sum(a.num_slots for a in self._attempts.values())

    def launch(self, launch: WorkerLaunch) -> None:
        if launch.trial_id in self._attempts:
            return
        if launch.num_slots > self.free_slots():
            raise ExecutorError(
                f"trial {launch.trial_id} needs {launch.num_slots} slot(s) but pool "
                f"{self._pool!r} has {self.free_slots()} of {self.capacity()} free"
            )
        self._check_shape(launch.num_slots)
        self._state.start()
        names, job = self._create_job(launch)
        owner = client.V1OwnerReference(
            api_version="batch/v1",
            kind="Job",
            name=job.metadata.name,
            uid=job.metadata.uid,
            block_owner_deletion=True,
        )
        try:
            for kind, build, create in (
                ("secrets", build_secret(names, launch, self._spec.namespace), self._secret),
                ("services", build_service(names, self._spec.namespace), self._service),
            ):
                build.metadata.owner_references = [owner]
                self._call(f"create {kind}", create, manifest(build))
            if self._spec.kueue_queue is None:
                resumed = {"spec": {"suspend": False}}
                job = self._call(
                    "patch jobs",
                    self._batch.patch_namespaced_job,
                    names.job,
                    self._spec.namespace,
                    resumed,
                )
        except ExecutorError:
            self._delete(names.job, grace_s=0, propagation="Background")
            raise
        self._state.note("jobs", job)
        key = worker_key(job.metadata.uid)
        self._attempts[launch.trial_id] = _Attempt(names, launch.num_slots, key)
        num_pods, ranks = pod_layout(self._spec, launch.num_slots)
        logger.info(
            "trial %d: Kubernetes Job %s/%s (%d pod(s) x %d rank(s), worker key %d)",
            launch.trial_id,
            self._spec.namespace,
            names.job,
            num_pods,
            ranks,
            key,
        )

    def poll(self, trial_id: int) -> int | None:
        attempt = self._attempts.get(trial_id)
        if attempt is None:
            raise ExecutorError(f"trial {trial_id} is not running on pool {self._pool!r}")
        job, pods = self._state.job(attempt.names.job)
        ending = attempt_status(job, pods).ending
        if ending is None:
            return None
        if attempt.killed and job is None and ending.cause is Cause.VANISHED:
            ending = Ending(-signal.SIGKILL)
        if ending.cause in (Cause.IMAGE_PULL, Cause.CONTAINER_CONFIG):
            ending = self._with_event(ending)  # such a pod never fails its Job by itself
            self._delete(attempt.names.job, grace_s=0, propagation="Background")
        del self._attempts[trial_id]
        self._state.forget(attempt.names.job)
        self._ended[trial_id] = ending
        return ending.code

    def waiting(self, trial_id: int) -> bool:
        attempt = self._attempts.get(trial_id)
        if attempt is None:
            return False
        status = attempt_status(*self._state.job(attempt.names.job))
        if status.waiting and status.why_waiting != attempt.why_waiting:
            logger.info("trial %d waits: %s", trial_id, status.why_waiting)
        attempt.why_waiting = status.why_waiting
        return status.waiting

    def describe_exit(self, trial_id: int, code: int) -> str:
        ending = self._ended.pop(trial_id, None) or Ending(code)
        return describe(ending, pool=self._pool)

    def stop(self, trial_id: int) -> None:
        """Each pod gets SIGTERM and stop_grace_s to checkpoint before SIGKILL."""
        attempt = self._attempts.get(trial_id)
        if attempt is not None:
            grace_s = self._spec.stop_grace_s
            self._delete(attempt.names.job, grace_s=grace_s, propagation="Foreground")

    def kill(self, trial_id: int) -> None:
        """Delete the Job, and its pods with no grace period: the garbage collector alone
        would give them theirs (stop_grace_s), and a hung worker must end now."""
        attempt = self._attempts.get(trial_id)
        if attempt is None:
            return
        attempt.killed = True
        self._delete(attempt.names.job, grace_s=0, propagation="Background")
        try:
            self._core.delete_collection_namespaced_pod(
                self._spec.namespace,
                label_selector=f"{LABEL_PREFIX}job={attempt.names.job}",
                grace_period_seconds=0,
            )
        except Exception as err:  # the Job is gone; its pods follow with their grace period
            logger.warning("cannot delete the pods of Job %s: %s", attempt.names.job, err)

    def end_leftover(self, trial_id: int, worker_key: int | None) -> None:
        """Delete the unfinished Jobs of this experiment that ran the trial (its attempts, or
        the pack whose worker key it stored, host or joined member: kubernetes_leftovers.py),
        and wait until their pods are gone. Jobs are listed under this experiment's labels
        only, so another experiment's Job is never touched."""
        jobs = self._list_jobs(experiment_selector(self._label))
        for trial, attempt in highest_attempts(jobs).items():  # the next launch: a new name
            self._launches[trial] = max(self._launches.get(trial, 0), attempt)
        ended = self._delete_leftovers(unfinished_of(jobs, trial_id, worker_key), trial_id)
        timeout_s = self._spec.stop_grace_s + LEFTOVER_MARGIN_S
        await_pods_gone(self._core, self._spec.namespace, ended, timeout_s=timeout_s)

    def running(self) -> list[int]:
        return list(self._attempts)

    def worker_key(self, trial_id: int) -> int | None:
        """The hash of the uid of the trial's (or its pack's) Job."""
        attempt = self._attempts.get(trial_id)
        return attempt.key if attempt else None

    def device_kind(self) -> str:
        return "cuda" if self._spec.gpus_per_pod else "cpu"

    def close(self) -> None:
        self._state.close()

    # -- helpers -------------------------------------------------------------------------------

    def _create_job(self, launch: WorkerLaunch) -> tuple[TrialNames, client.V1Job]:
        """Create the attempt's Job. A name that is taken (409) belongs to an earlier
        Master's attempt of this trial: its unfinished Jobs are deleted (their workers hold
        that Master's token), and the attempt after the highest one found is created."""
        attempt = self._launches.get(launch.trial_id, 0) + 1
        try:
            names, job = self._post_job(launch, attempt)
        except ApiException:  # 409 only (see _post_job)
            logger.warning(
                "trial %d: attempt %d exists (an earlier Master's)", launch.trial_id, attempt
            )
            attempt = self._end_earlier_attempts(launch.trial_id) + 1
            names, job = self._post_job(launch, attempt, taken_is_error=True)
        self._launches[launch.trial_id] = attempt
        return names, job

    def _post_job(
        self, launch: WorkerLaunch, attempt: int, *, taken_is_error: bool = False
    ) -> tuple[TrialNames, client.V1Job]:
        """POST the attempt's Job; a 409 is raised as it is unless `taken_is_error`."""
        names = TrialNames(self._label, launch.trial_id, attempt)
        body = manifest(self._job(names, launch), self._spec)
        try:
            return names, self._batch.create_namespaced_job(self._spec.namespace, body)
        except ApiException as err:
            if err.status == 409 and not taken_is_error:
                raise
            raise self._failure(err, "create jobs") from err
        except Exception as err:
            raise self._failure(err, "create jobs") from err

    def _end_earlier_attempts(self, trial_id: int) -> int:
        """Delete the trial's unfinished Jobs; the highest attempt number it has (0: none).
        Finished ones stay until their TTL, with their pods' logs."""
        selector = f"{experiment_selector(self._label)},{LABEL_PREFIX}trial={trial_id}"
        jobs = self._list_jobs(selector)
        self._delete_leftovers(unfinished_of(jobs, trial_id, None), trial_id)
        return highest_attempts(jobs).get(trial_id, 0)

    def _list_jobs(self, selector: str) -> list[client.V1Job]:
        return self._call(
            "list jobs",
            self._batch.list_namespaced_job,
            self._spec.namespace,
            label_selector=selector,
        ).items

    def _delete_leftovers(self, jobs: list[client.V1Job], trial_id: int) -> list[str]:
        """Delete `jobs` (their pods get their grace period); their names."""
        for job in jobs:
            logger.warning("trial %d: deleting leftover Job %s", trial_id, job.metadata.name)
            self._delete(job.metadata.name, grace_s=0, propagation="Background")
        return [job.metadata.name for job in jobs]

    def _job(self, names: TrialNames, launch: WorkerLaunch) -> client.V1Job:
        return build_job(self._spec, names, launch, experiment_name=self._experiment)

    def _secret(self, body: dict[str, Any]) -> Any:
        return self._core.create_namespaced_secret(self._spec.namespace, body)

    def _service(self, body: dict[str, Any]) -> Any:
        return self._core.create_namespaced_service(self._spec.namespace, body)

    def _delete(self, job: str, *, grace_s: int, propagation: str) -> None:
        """Delete a Job and, through garbage collection, its pods, Service and Secret."""
        try:
            self._batch.delete_namespaced_job(
                job,
                self._spec.namespace,
                grace_period_seconds=grace_s,
                propagation_policy=propagation,
            )
        except ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                logger.warning("cannot delete Job %s: %s", job, err.reason)
        except Exception as err:  # unreachable: the next attempt's launch will say so
            logger.warning("cannot delete Job %s: %s", job, err)

    def _with_event(self, ending: Ending) -> Ending:
        """The pod's newest Warning event (the kubelet's own words on the image or volume)."""
        try:
            events = self._core.list_namespaced_event(
                self._spec.namespace, field_selector=f"involvedObject.name={ending.pod}"
            ).items
        except Exception as err:  # the container's own message is still there
            logger.warning("cannot read the events of pod %s: %s", ending.pod, err)
            return ending
        warnings = [e for e in events if e.type == "Warning" and e.message]
        if not warnings:
            return ending
        newest = max(warnings, key=lambda e: str(e.last_timestamp or e.event_time or ""))
        reason = newest.reason or ending.reason
        return Ending(ending.code, ending.pod, ending.node, ending.cause, reason, newest.message)

    def _call(self, action: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """One request; any failure as an ExecutorError that says what to do."""
        try:
            return method(*args, **kwargs)
        except Exception as err:
            raise self._failure(err, action) from err

    def _failure(self, err: Exception, action: str) -> ExecutorError:
        return api_failure(err, action=action, spec=self._spec, api=self._api, pool=self._pool)

    def _check_shape(self, num_slots: int) -> None:
        num_pods, _ = pod_layout(self._spec, num_slots)
        limit = self._spec.max_pods_per_trial or self._spec.max_pods
        per_pod, problem = self._spec.slots_per_pod, None
        if num_pods > limit:
            problem = (
                f"{num_slots} slots per trial need {num_pods} pods of pool {self._pool!r} "
                f"({per_pod} slot(s) per pod in {self._source}) but it gives a trial at most "
                f"{limit}; lower slots_per_trial to at most {limit * per_pod}"
            )
        elif num_pods > 1 and num_slots % per_pod:
            problem = (
                f"{num_slots} slots per trial do not fill whole pods of pool {self._pool!r} "
                f"({per_pod} slot(s) per pod); use a multiple of {per_pod}, or at most {per_pod}"
            )
        if problem:
            raise ConfigError([f"`resources.slots_per_trial`: {problem}"])
