"""A stateful fake of the Kubernetes API over real HTTP on 127.0.0.1: test scaffolding for
the cluster that no test machine here has, never a stand-in for trainyard's own code.

It keeps objects as the API writes them (camelCase JSON) under one resourceVersion counter,
serves create, get, list (label and field selectors), strategic-merge patch, delete (with
grace period and propagation policy), delete-collection, and watch streams (chunked JSON
lines, from a resourceVersion, 410 Gone once it is compacted away), as the official client
speaks them. Tests inject what a cluster would do (pod phases, events, evictions), refuse a
namespace (403), or take the API down. `requests` records every verb on every resource.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Obj = dict[str, Any]
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z.]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<resource>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?$"
)
KINDS = {
    "jobs": "Job",
    "pods": "Pod",
    "services": "Service",
    "secrets": "Secret",
    "events": "Event",
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(target: Obj, patch: Obj) -> None:
    """A merge patch (maps merge, everything else is replaced; None deletes)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


class FakeKubernetes:
    """The store, its watchers and the HTTP server; `on_change` is the fake controllers'."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.version = 1
        self.compacted = 0
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.log: list[tuple[int, str, str, Obj]] = []
        """(resourceVersion, resource, event type, object) of every change."""
        self.requests: list[tuple[str, str, str]] = []
        """(verb, API group, resource) of every request."""
        self.forbidden: set[str] = set()
        self.on_change: list[Callable[[str, str, Obj], None]] = []
        self.on_delete: list[Callable[[str, str, str, dict[str, str]], None]] = []
        """The fake controllers' hooks: a stored change, and a delete request (the controller
        decides when the object goes, as the garbage collector and the kubelet do)."""
        self.deletions: list[tuple[str, str, dict[str, str]]] = []
        """(resource, name, options) of every delete, for the tests to read."""
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # -- lifetime ------------------------------------------------------------------------------

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()

    def stop(self) -> None:
        """Take the API down (connections are refused until `start` again)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            self.lock.notify_all()

    @property
    def up(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the store -----------------------------------------------------------------------------

    def put(self, resource: str, obj: Obj, event: str) -> Obj:
        """Store (or, for DELETED, drop) an object under a new resourceVersion."""
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        with self.lock:
            self.version += 1
            meta["resourceVersion"] = str(self.version)
            if event == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self.log.append((self.version, resource, event, json.loads(json.dumps(obj))))
            self.lock.notify_all()
        for callback in self.on_change:
            callback(resource, event, obj)
        return obj

    def create(self, resource: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        obj.setdefault("apiVersion", "batch/v1" if resource == "jobs" else "v1")
        obj.setdefault("kind", KINDS[resource])
        if resource in ("jobs", "pods"):
            obj.setdefault("status", {})
        if resource == "secrets":  # the API keeps stringData as base64 data
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData", {}).items():
                data[key] = base64.b64encode(value.encode()).decode()
        return self.put(resource, obj, "ADDED")

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            return self.objects.get((resource, namespace, name))

    def items(self, resource: str, namespace: str, query: dict[str, str]) -> list[Obj]:
        with self.lock:
            found = [
                o for (r, ns, _), o in self.objects.items() if r == resource and ns == namespace
            ]
        return [o for o in found if _selected(o, query)]

    def update(self, resource: str, namespace: str, name: str, patch: Obj) -> Obj | None:
        """Merge `patch` into a stored object (a MODIFIED event); None if there is none."""
        obj = self.get(resource, namespace, name)
        if obj is None:
            return None
        merge(obj, patch)
        return self.put(resource, obj, "MODIFIED")

    def remove(self, resource: str, namespace: str, name: str) -> None:
        obj = self.get(resource, namespace, name)
        if obj is not None:
            self.put(resource, obj, "DELETED")

    def compact(self) -> None:
        """Forget the history: every open watch ends, and resuming one from an old
        resourceVersion gets 410 Gone, as after an etcd compaction."""
        with self.lock:
            self.version += 1
            self.compacted = self.version
            self.log.clear()
            self.lock.notify_all()

    def used(self) -> dict[tuple[str, str], set[str]]:
        """The verbs each (API group, resource) was asked for."""
        verbs: dict[tuple[str, str], set[str]] = {}
        for verb, group, resource in self.requests:
            verbs.setdefault((group, resource), set()).add(verb)
        return verbs


def _selected(obj: Obj, query: dict[str, str]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        path, _, value = term.partition("=")
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubernetes
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        match = _PATH.match(url.path)
        if match is None:
            return self._status(404, "NotFound", f"the server could not find {url.path}")
        group, ns, resource, name = (
            match["group"] or "",
            match["ns"],
            match["resource"],
            match["name"],
        )
        verb = {"POST": "create", "PATCH": "patch"}.get(method, "")
        if method == "GET":
            verb = "get" if name else ("watch" if query.get("watch") == "true" else "list")
        if method == "DELETE":
            verb = "delete" if name else "deletecollection"
        self.fake.requests.append((verb, group, resource))
        if ns in self.fake.forbidden:
            user = "system:serviceaccount:trainyard:trainyard"
            where = f' in API group "{group}"' if group else ' in API group ""'
            return self._status(
                403,
                "Forbidden",
                f'{resource}{"." + group if group else ""} is forbidden: User "{user}" cannot '
                f'{verb} resource "{resource}"{where} in the namespace "{ns}"',
            )
        handler = getattr(self, f"_{verb}")
        handler(resource, ns, name, query, body)

    # -- verbs ---------------------------------------------------------------------------------

    def _create(self, resource: str, ns: str, _: Any, query: dict[str, str], body: Obj) -> None:
        body["metadata"]["namespace"] = ns
        if self.fake.get(resource, ns, body["metadata"]["name"]) is not None:
            kind = f"{resource}.batch" if resource == "jobs" else resource
            message = f'{kind} "{body["metadata"]["name"]}" already exists'
            return self._status(409, "AlreadyExists", message)
        if query.get("dryRun") == "All":
            return self._json(201, body)
        self._json(201, self.fake.create(resource, body))

    def _get(self, resource: str, ns: str, name: str, *_: Any) -> None:
        obj = self.fake.get(resource, ns, name)
        if obj is None:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        self._json(200, obj)

    def _list(self, resource: str, ns: str, _: Any, query: dict[str, str], __: Any) -> None:
        with self.fake.lock:
            items, version = self.fake.items(resource, ns, query), self.fake.version
        kind = KINDS[resource] + "List"
        meta = {"resourceVersion": str(version)}
        self._json(200, {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items})

    def _patch(self, resource: str, ns: str, name: str, _: Any, body: Obj) -> None:
        obj = self.fake.update(resource, ns, name, body)
        if obj is None:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        self._json(200, obj)

    def _delete(self, resource: str, ns: str, name: str, query: dict[str, str], body: Any) -> None:
        options = {**{k: str(v) for k, v in (body or {}).items()}, **query}
        obj = self.fake.get(resource, ns, name)
        if obj is None:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        self.fake.deletions.append((resource, name, options))
        self._json(200, obj)
        for callback in self.fake.on_delete:
            callback(resource, ns, name, options)

    def _deletecollection(
        self, resource: str, ns: str, _: Any, query: dict[str, str], body: Any
    ) -> None:
        options = {**{k: str(v) for k, v in (body or {}).items()}, **query}
        for obj in self.fake.items(resource, ns, query):
            self.fake.deletions.append((resource, obj["metadata"]["name"], options))
            for callback in self.fake.on_delete:
                callback(resource, ns, obj["metadata"]["name"], options)
        self._json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def _watch(self, resource: str, ns: str, _: Any, query: dict[str, str], __: Any) -> None:
        since = int(query.get("resourceVersion") or 0)
        deadline = threading.Event()
        timer = threading.Timer(float(query.get("timeoutSeconds", 30)), deadline.set)
        timer.start()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fake = self.fake
        try:
            while not deadline.is_set() and fake.up:
                with fake.lock:
                    if since < fake.compacted:
                        gone = {
                            "kind": "Status",
                            "status": "Failure",
                            "code": 410,
                            "reason": "Expired",
                            "message": f"too old resource version: {since} ({fake.compacted})",
                        }
                        self._chunk({"type": "ERROR", "object": gone})
                        return
                    events = [e for e in fake.log if e[0] > since and e[1] == resource]
                    if not events:
                        compacted = fake.compacted
                        fake.lock.wait(0.2)
                        if fake.compacted != compacted:
                            return  # a compaction ends every watch
                        continue
                for version, _, event, obj in events:
                    since = version
                    if obj["metadata"]["namespace"] == ns and _selected(obj, query):
                        self._chunk({"type": event, "object": obj})
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            timer.cancel()
            with contextlib.suppress(OSError):
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

    # -- answers -------------------------------------------------------------------------------

    def _chunk(self, event: Obj) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, code: int, obj: Obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._json(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )
