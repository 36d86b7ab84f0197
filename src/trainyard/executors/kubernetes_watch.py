"""The executor's picture of its Jobs and pods, kept current by list-then-watch.

One background thread per resource (Jobs, pods) lists the experiment's objects, then watches
from the list's resourceVersion. When the API has compacted that version away (410 Gone) the
thread lists again; when the API cannot be reached it keeps the last picture, says so once,
and tries again. A deleted object stays in the picture with its last state, so an attempt
whose pods were deleted (a stop, an eviction) still ends with their exit status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from trainyard.executors.kubernetes_api import is_unreachable
from trainyard.executors.kubernetes_objects import LABEL_PREFIX

logger = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 20
"""The API closes each watch after this long; the thread then watches again from where it was."""
RETRY_S = 1.0


@dataclass
class _Picture:
    """The last state of each object of one resource, by name, and which are deleted."""

    objects: dict[str, Any] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    unconfirmed: set[str] = field(default_factory=set)
    """Noted by this process and not yet seen from the API: a list that was answered before
    they were created must not count them as deleted."""


class ClusterState:
    """Jobs and pods of one experiment in one namespace, as the API last showed them."""

    def __init__(self, api: client.ApiClient, *, namespace: str, selector: str) -> None:
        self._namespace = namespace
        self._selector = selector
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        self._lists: dict[str, Callable[..., Any]] = {
            "jobs": batch.list_namespaced_job,
            "pods": core.list_namespaced_pod,
        }
        self._pictures = {kind: _Picture() for kind in self._lists}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.unreachable: str | None = None
        """Why the API could not be read, while it cannot."""
        self.relists = 0
        """How many times a watch had to list again (410 Gone or a lost connection)."""

    def start(self) -> None:
        """Start watching; idempotent."""
        if self._threads:
            return
        for kind in self._lists:
            thread = threading.Thread(
                target=self._follow, args=(kind,), name=f"kubernetes-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop watching (the threads end within WATCH_TIMEOUT_S; they are daemons)."""
        self._stop.set()

    def note(self, kind: str, obj: Any) -> None:
        """An object this process just created or changed, ahead of its watch event."""
        with self._changed:
            picture = self._pictures[kind]
            picture.objects[obj.metadata.name] = obj
            picture.deleted.discard(obj.metadata.name)
            picture.unconfirmed.add(obj.metadata.name)
            self._changed.notify_all()

    def job(self, name: str) -> tuple[client.V1Job | None, list[client.V1Pod]]:
        """A Job (None once deleted) and every pod of it that was ever seen."""
        with self._lock:
            jobs, pods = self._pictures["jobs"], self._pictures["pods"]
            job = None if name in jobs.deleted else jobs.objects.get(name)
            mine = [p for p in pods.objects.values() if _job_of(p) == name]
        return job, mine

    def forget(self, name: str) -> None:
        """Drop an ended Job and its pods from the picture."""
        with self._lock:
            jobs, pods = self._pictures["jobs"], self._pictures["pods"]
            jobs.objects.pop(name, None)
            jobs.deleted.discard(name)
            jobs.unconfirmed.discard(name)
            for pod in [n for n, p in pods.objects.items() if _job_of(p) == name]:
                del pods.objects[pod]
                pods.deleted.discard(pod)

    def wait_for_change(self, timeout_s: float) -> None:
        """Block until an event arrives or `timeout_s` passes (for callers that wait)."""
        with self._changed:
            self._changed.wait(timeout_s)

    # -- the threads ---------------------------------------------------------------------------

    def _follow(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                version = self._list(kind)
                self._watch(kind, version)
            except Exception as err:  # any failure: keep the picture, list again
                self._lost(kind, err)

    def _list(self, kind: str) -> str:
        listing = self._lists[kind](self._namespace, label_selector=self._selector)
        picture = self._pictures[kind]
        with self._changed:
            listed = {obj.metadata.name: obj for obj in listing.items}
            picture.deleted |= set(picture.objects) - set(listed) - picture.unconfirmed
            picture.objects.update(listed)
            picture.deleted -= set(listed)
            picture.unconfirmed -= set(listed)
            self._changed.notify_all()
        if self.unreachable is not None:
            logger.warning("the Kubernetes API answers again (%s)", kind)
            self.unreachable = None
        return str(listing.metadata.resource_version)

    def _watch(self, kind: str, version: str) -> None:
        """Follow events from `version` until the API says it is gone (410) or we stop."""
        stream = watch.Watch()
        while not self._stop.is_set():
            for event in stream.stream(
                self._lists[kind],
                self._namespace,
                label_selector=self._selector,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT_S,
                allow_watch_bookmarks=True,
            ):
                self._apply(kind, event["type"], event["object"])
                if self._stop.is_set():
                    return
            version = stream.resource_version or version

    def _apply(self, kind: str, event: str, obj: Any) -> None:
        if event == "BOOKMARK":
            return
        picture = self._pictures[kind]
        with self._changed:
            picture.objects[obj.metadata.name] = obj
            picture.unconfirmed.discard(obj.metadata.name)
            if event == "DELETED":
                picture.deleted.add(obj.metadata.name)
            self._changed.notify_all()

    def _lost(self, kind: str, err: Exception) -> None:
        self.relists += 1
        if isinstance(err, ApiException) and err.status == 410:
            logger.info("watch of %s: resourceVersion gone (410); listing again", kind)
            return
        if is_unreachable(err):
            if self.unreachable is None:
                logger.warning("cannot reach the Kubernetes API to watch %s: %s", kind, err)
            self.unreachable = str(err)
        else:
            logger.warning("watch of %s failed: %r; listing again", kind, err)
        self._stop.wait(RETRY_S)


def _job_of(pod: client.V1Pod) -> str | None:
    return (pod.metadata.labels or {}).get(LABEL_PREFIX + "job")
