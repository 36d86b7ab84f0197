"""The connection to a pool's Kubernetes API, and what its refusals mean in words.

Kept apart from the executor so that credentials (a kubeconfig and its context, or the
service account of the pod the Master runs in) and error messages live in one place. API_RULES
is the one list of what the executor asks the API for; the Role in
deploy/kubernetes/base/trial-rbac.yaml grants exactly it (checked by the tests against the
requests the executor makes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.errors import ConfigError, ExecutorError
from trainyard.suggest import did_you_mean

REQUEST_TIMEOUT_S = 30.0
"""How long one API call may take before the API counts as unreachable."""


@dataclass(frozen=True)
class ApiRule:
    """Verbs on one resource, as an RBAC rule writes them."""

    group: str
    resource: str
    verbs: tuple[str, ...]


API_RULES = (
    ApiRule("batch", "jobs", ("create", "list", "watch", "patch", "delete")),
    ApiRule("", "services", ("create",)),
    ApiRule("", "secrets", ("create",)),
    ApiRule("", "pods", ("list", "watch", "deletecollection")),
    ApiRule("", "events", ("list",)),
)
"""Everything the executor does in a pool's namespace: Jobs it creates, resumes, watches and
deletes; a Service and a Secret per attempt (deleted with their Job, whose children they are);
pods it watches, and kills at once (grace period 0) when a trial is killed; events it reads
for a pod that cannot start."""


def connect(spec: KubernetesPoolSpec, *, pool: str, source: str) -> client.ApiClient:
    """An API client from the pool's kubeconfig and context, or the pod's service account.

    Raises:
        ConfigError: the kubeconfig does not exist or has no such context.
        ExecutorError: in_cluster outside a pod, or a kubeconfig the client cannot use.
    """
    configuration = client.Configuration()
    where = f"`pools.{pool}.kubernetes"
    if spec.in_cluster:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as err:
            raise ExecutorError(
                f"pool {pool!r} has in_cluster: true but this process is not in a Kubernetes "
                f"pod with a service account ({err}); run the Master on the cluster, or give "
                f"the pool a kubeconfig instead ({source})"
            ) from err
    else:
        path = _kubeconfig_path(spec)
        if not path.is_file():
            raise ConfigError(
                [
                    f"{where}.kubeconfig`: no such file: {path} (pool {pool!r}); set the pool's "
                    "kubeconfig or KUBECONFIG to your cluster's file (`kubectl config view "
                    "--raw` shows yours), or in_cluster: true on the cluster"
                ],
                source=source,
            )
        contexts, _ = config.list_kube_config_contexts(config_file=str(path))
        names = [c["name"] for c in contexts]
        if spec.context is not None and spec.context not in names:
            raise ConfigError(
                [
                    f"{where}.context`: kubeconfig {path} has no context {spec.context!r}; "
                    f"{did_you_mean(spec.context, names)}contexts: {', '.join(names) or 'none'}"
                    " (`kubectl config get-contexts`)"
                ],
                source=source,
            )
        try:
            config.load_kube_config(
                config_file=str(path), context=spec.context, client_configuration=configuration
            )
        except ConfigException as err:
            raise ExecutorError(f"cannot use kubeconfig {path} for pool {pool!r}: {err}") from err
    configuration.retries = 1  # an unreachable API is reported, not retried for minutes
    return client.ApiClient(configuration)


def api_failure(
    err: Exception, *, action: str, spec: KubernetesPoolSpec, api: client.ApiClient, pool: str
) -> ExecutorError:
    """An ExecutorError that says what failed, why, and what to do about it.

    `action` names the request, e.g. "create jobs" (a verb and a resource of API_RULES).
    """
    host = api.configuration.host
    if not isinstance(err, ApiException) or err.status == 0:
        return ExecutorError(
            f"cannot reach the Kubernetes API at {host} (pool {pool!r}) to {action}: "
            f"{_short(err)}; check that the cluster is up and that `kubectl get pods -n "
            f"{spec.namespace}` works with the same kubeconfig and context"
        )
    said = _api_message(err)
    if err.status == 403:
        verb, _, resource = action.partition(" ")
        rule = next((r for r in API_RULES if r.resource == resource), None)
        group = f"API group {rule.group!r}" if rule and rule.group else "the core API group"
        return ExecutorError(
            f"the Kubernetes API at {host} refused to {action} in namespace "
            f"{spec.namespace!r} (pool {pool!r}): {said}\n  grant the identity of the "
            f"pool's kubeconfig (or the Master's service account) a Role in namespace "
            f"{spec.namespace!r} with verbs [{verb}] on {resource} in {group}, as "
            "deploy/kubernetes/base/trial-rbac.yaml does, bound by a RoleBinding"
        )
    if err.status == 404 and "namespaces" in said:
        return ExecutorError(
            f"namespace {spec.namespace!r} of pool {pool!r} does not exist at {host}: {said}; "
            f"create it (`kubectl create namespace {spec.namespace}`) or fix the pool's namespace"
        )
    return ExecutorError(
        f"the Kubernetes API at {host} refused to {action} in namespace {spec.namespace!r} "
        f"(pool {pool!r}): HTTP {err.status}: {said}"
    )


def is_unreachable(err: Exception) -> bool:
    """Whether `err` means no answer at all (connection refused, timed out, reset)."""
    return isinstance(err, urllib3.exceptions.HTTPError | OSError) or (
        isinstance(err, ApiException) and err.status == 0
    )


def _kubeconfig_path(spec: KubernetesPoolSpec) -> Path:
    if spec.kubeconfig is not None:
        return spec.kubeconfig.expanduser()
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def _api_message(err: ApiException) -> str:
    """The message of the API's Status body, or its reason."""
    try:
        return str(json.loads(err.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(err.reason)


def _short(err: Exception) -> str:
    reason = getattr(err, "reason", None)
    return str(reason or err).splitlines()[0]
