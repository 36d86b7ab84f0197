"""The fake API's controllers: what a cluster does with a Job once it is stored.

- the Job controller: an unsuspended Indexed Job gets one pod per index (hostname
  <job>-<index>, the completion-index annotation); a failed pod fails the Job (backoffLimit 0)
  and ends the others; all pods succeeded completes it;
- the garbage collector: deleting a Job deletes its pods, Service and Secret, at once
  (background) or before the Job itself goes (foreground);
- with `run_pods`, a kubelet that runs each pod's container command as a local process with
  the pod's environment (values, the completion index, secretKeyRef from the stored Secret,
  $(VAR) expansion), SIGTERM then SIGKILL after the grace period on deletion, and the exit
  status as the pod's phase. The cluster's DNS is this machine: MASTER_ADDR, a pod of the
  trial's Service, becomes 127.0.0.1 with a port of the Job's own.
Without `run_pods`, tests move pods through their phases themselves (`set_pod`).
"""

from __future__ import annotations

import base64
import copy
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.executors.kube_fake.api import FakeKubernetes, Obj, now

INDEX = "batch.kubernetes.io/job-completion-index"
NODE = "fake-node-1"


class FakeCluster:
    """Reacts to the fake API's changes as the control plane and one node would."""

    def __init__(self, api: FakeKubernetes, *, run_pods: bool = False) -> None:
        self.api = api
        self.run_pods = run_pods
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}
        self._lock = threading.RLock()
        self._started: set[str] = set()
        self._evicted: dict[str, str] = {}
        api.on_change.append(self._changed)
        api.on_delete.append(self._deleted)

    def close(self) -> None:
        """SIGKILL every pod process still running."""
        with self._lock:
            for process in self.processes.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)

    # -- what tests inject ---------------------------------------------------------------------

    def pods(self, job: str, namespace: str = "trials") -> list[Obj]:
        """The pods of Job `job`, as stored now."""
        pods = self.api.items("pods", namespace, {})
        return [p for p in pods if p["metadata"]["labels"].get("trainyard.io/job") == job]

    def set_pod(self, name: str, namespace: str, status: Obj, **meta: Any) -> None:
        """Merge `status` (and metadata) into a pod, as a kubelet or the scheduler would."""
        self.api.update("pods", namespace, name, {"status": status, "metadata": meta})

    def event(self, pod: Obj, reason: str, message: str) -> None:
        """A Warning event about `pod`, as the kubelet writes one."""
        meta = pod["metadata"]
        name = f"{meta['name']}.{secrets.token_hex(4)}"
        self.api.create(
            "events",
            {
                "metadata": {"name": name, "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "name": meta["name"]},
                "type": "Warning",
                "reason": reason,
                "message": message,
                "lastTimestamp": now(),
            },
        )

    def evict(self, name: str, message: str) -> None:
        """Evict a running pod as the kubelet does under memory pressure: its processes are
        killed and it fails with reason Evicted."""
        with self._lock:
            self._evicted[name] = message
            process = self.processes[name]
        _kill_group(process)

    # -- the controllers -----------------------------------------------------------------------

    def _changed(self, resource: str, event: str, obj: Obj) -> None:
        meta = obj["metadata"]
        if resource == "jobs" and event != "DELETED":
            spec = obj["spec"]
            if not spec.get("suspend") and "deletionTimestamp" not in meta:
                self._start_job(obj)
        elif resource == "pods" and event == "MODIFIED":
            self._job_status(meta["labels"].get("trainyard.io/job", ""), meta["namespace"])
            ended = obj["status"].get("phase") in ("Succeeded", "Failed")
            if ended and "deletionTimestamp" in meta:
                self.api.remove("pods", meta["namespace"], meta["name"])
        elif resource == "pods" and event == "DELETED":
            self._finish_foreground(meta["labels"].get("trainyard.io/job", ""), meta["namespace"])

    def _start_job(self, job: Obj) -> None:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        with self._lock:
            if name in self._started:
                return
            self._started.add(name)
        template = job["spec"]["template"]
        for index in range(job["spec"]["completions"]):
            pod_meta = copy.deepcopy(template["metadata"])
            pod_meta["name"] = f"{name}-{index}-{secrets.token_hex(3)[:5]}"
            pod_meta["namespace"] = namespace
            pod_meta.setdefault("annotations", {})[INDEX] = str(index)
            pod_meta["labels"] = {
                **pod_meta.get("labels", {}),
                "job-name": name,
                INDEX: str(index),
            }
            pod_meta["ownerReferences"] = [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"]["uid"],
                }
            ]
            spec = {**copy.deepcopy(template["spec"]), "hostname": f"{name}-{index}"}
            status = {"phase": "Pending"}
            pod = self.api.create("pods", {"metadata": pod_meta, "spec": spec, "status": status})
            if self.run_pods:
                self._run(pod)

    def _job_status(self, job_name: str, namespace: str) -> None:
        job = self.api.get("jobs", namespace, job_name)
        if job is None or any(c["status"] == "True" for c in job["status"].get("conditions", [])):
            return
        phases = [p["status"].get("phase") for p in self.pods(job_name, namespace)]
        if "Failed" in phases:
            condition = {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
            self.api.update(
                "jobs",
                namespace,
                job_name,
                {"status": {"conditions": [condition], "failed": phases.count("Failed")}},
            )
            for pod in self.pods(job_name, namespace):
                if pod["status"].get("phase") in ("Pending", "Running"):
                    self._terminate(
                        pod, grace_s=int(pod["spec"].get("terminationGracePeriodSeconds", 30))
                    )
        elif phases and phases.count("Succeeded") == job["spec"]["completions"]:
            condition = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
            self.api.update(
                "jobs",
                namespace,
                job_name,
                {"status": {"conditions": [condition], "succeeded": len(phases)}},
            )

    def _deleted(self, resource: str, namespace: str, name: str, options: dict[str, str]) -> None:
        obj = self.api.get(resource, namespace, name)
        if obj is None:
            return
        if resource == "pods":
            grace = options.get("gracePeriodSeconds")
            default = obj["spec"].get("terminationGracePeriodSeconds", 30)
            self._terminate(obj, grace_s=int(grace if grace is not None else default))
            return
        if resource != "jobs":
            self.api.remove(resource, namespace, name)
            return
        pods = self.pods(name, namespace)
        if options.get("propagationPolicy") == "Foreground" and pods:
            meta = {"deletionTimestamp": now(), "finalizers": ["foregroundDeletion"]}
            self.api.update("jobs", namespace, name, {"metadata": meta})
        else:
            self._remove_job(name, namespace)
        for pod in pods:  # the garbage collector deletes them with their own grace period
            self._terminate(pod, grace_s=int(pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def _finish_foreground(self, job_name: str, namespace: str) -> None:
        job = self.api.get("jobs", namespace, job_name)
        if (
            job is not None
            and "deletionTimestamp" in job["metadata"]
            and not self.pods(job_name, namespace)
        ):
            self._remove_job(job_name, namespace)

    def _remove_job(self, name: str, namespace: str) -> None:
        self.api.remove("jobs", namespace, name)
        for resource in ("services", "secrets"):
            for obj in self.api.items(resource, namespace, {}):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(o["name"] == name for o in owners):
                    self.api.remove(resource, namespace, obj["metadata"]["name"])

    def _terminate(self, pod: Obj, *, grace_s: int) -> None:
        """Delete a pod as the kubelet does: SIGTERM, SIGKILL after the grace period."""
        meta = pod["metadata"]
        if "deletionTimestamp" in meta:
            return
        self.api.update(
            "pods", meta["namespace"], meta["name"], {"metadata": {"deletionTimestamp": now()}}
        )
        with self._lock:
            process = self.processes.get(meta["name"])
        if process is None:  # a pod the test moves: it ends when the test says, or now
            if grace_s == 0 or pod["status"].get("phase") != "Running":
                self._killed(pod)
            return
        if process.poll() is not None:
            self.api.remove("pods", meta["namespace"], meta["name"])
            return
        if grace_s == 0:
            os.killpg(process.pid, signal.SIGKILL)
            return
        process.send_signal(signal.SIGTERM)
        timer = threading.Timer(grace_s, _kill_group, args=(process,))
        timer.daemon = True
        timer.start()

    def _killed(self, pod: Obj) -> None:
        """A pod without a process of ours, deleted: SIGKILLed if it ran, then gone."""
        meta = pod["metadata"]
        if pod["status"].get("phase") == "Running":
            terminated = {"exitCode": 137, "reason": "Error", "finishedAt": now()}
            state = container_status({"terminated": terminated})
            status = {"phase": "Failed", "containerStatuses": [state]}
            self.api.update("pods", meta["namespace"], meta["name"], {"status": status})
        self.api.remove("pods", meta["namespace"], meta["name"])

    # -- the kubelet ---------------------------------------------------------------------------

    def _run(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        (container,) = spec["containers"]
        env = self._env(pod, container)
        expand = lambda word: re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), word)  # noqa: E731
        command = [expand(w) for w in container["command"] + container.get("args", [])]
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=container.get("workingDir") or None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self._lock:
            self.processes[meta["name"]] = process
        running = {"running": {"startedAt": now()}}
        self.set_pod(
            meta["name"],
            meta["namespace"],
            {
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": "worker",
                        "ready": True,
                        "restartCount": 0,
                        "image": container["image"],
                        "imageID": "",
                        "state": running,
                    }
                ],
            },
        )
        threading.Thread(target=self._reap, args=(pod, process), daemon=True).start()

    def _reap(self, pod: Obj, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        code = 128 - code if code < 0 else code  # a signal, as a container runtime reports it
        meta = pod["metadata"]
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "finishedAt": now(),
        }
        status: Obj = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [container_status({"terminated": terminated})],
        }
        with self._lock:
            evicted = self._evicted.get(meta["name"])
        if evicted is not None:
            status.update(reason="Evicted", message=evicted)
        self.set_pod(meta["name"], meta["namespace"], status)
        current = self.api.get("pods", meta["namespace"], meta["name"])
        if current is not None and "deletionTimestamp" in current["metadata"]:
            self.api.remove("pods", meta["namespace"], meta["name"])

    def _env(self, pod: Obj, container: Obj) -> dict[str, str]:
        env: dict[str, str] = {}
        meta = pod["metadata"]
        for var in container.get("env", []):
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = var.get("value", "")
            elif "fieldRef" in source:
                key = re.search(r"\['(.+)'\]", source["fieldRef"]["fieldPath"])[1]  # type: ignore[index]
                env[var["name"]] = meta["annotations"][key]
            else:
                ref = source["secretKeyRef"]
                secret = self.api.get("secrets", meta["namespace"], ref["name"])
                assert secret is not None, f"pod {meta['name']}: no Secret {ref['name']}"
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        job = meta["labels"]["job-name"]
        if env.get("MASTER_ADDR", "").endswith("." + pod["spec"].get("subdomain", "")):
            env["MASTER_ADDR"] = "127.0.0.1"  # the fake cluster's DNS: every pod is here
            with self._lock:
                env["MASTER_PORT"] = str(self._ports.setdefault(job, _free_port()))
        env["HOSTNAME"] = pod["spec"]["hostname"]
        return env


def container_status(state: Obj) -> Obj:
    """The worker container's status in `state` (running, waiting or terminated)."""
    return {
        "name": "worker",
        "ready": False,
        "restartCount": 0,
        "image": "",
        "imageID": "",
        "state": state,
    }


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, api: FakeKubernetes, *, context: str = "fake") -> Path:
    """A kubeconfig whose context `context` reaches the fake API (a bearer token, plain HTTP)."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "trainyard", "user": {"token": "fake-token"}}],
        "contexts": [{"name": context, "context": {"cluster": "fake", "user": "trainyard"}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config))
    return path
