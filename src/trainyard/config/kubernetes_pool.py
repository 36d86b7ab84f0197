"""A pool of type `kubernetes` in the facility file: where and how trials run as Jobs.

Written by operators (docs/operators/kubernetes.md). Everything Kubernetes itself would refuse
later (a namespace that is no DNS-1123 label, a memory size it cannot parse, a toleration
without an effect it knows) is refused here, with the key path, before a trial is queued.
Kept apart from facility.py, which only names this section, since it is most of the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label: what Kubernetes accepts as a namespace or Service name (<= 63 chars)."""
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
"""A Kubernetes resource quantity as written in a pod spec (64Gi, 500M, 4, 0.5)."""
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LabelKey = Annotated[str, Field(pattern=_LABEL_KEY, max_length=316)]
LabelValue = Annotated[str, Field(pattern=_LABEL_VALUE, max_length=63)]
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]

OWNED_POD_FIELDS = {
    "containers": "image, gpus_per_pod, cpus_per_gpu, memory_per_gpu, extra_resources",
    "restartPolicy": "nothing: trials run with Never, and the runner retries them",
    "volumes": "volumes.data and volumes.staging",
    "nodeSelector": "node_selector",
    "tolerations": "tolerations",
    "priorityClassName": "priority_class",
    "serviceAccountName": "service_account",
    "securityContext": "run_as_user",
    "subdomain": "nothing: it is the trial's headless Service",
    "hostname": "nothing: the Job names each pod",
    "terminationGracePeriodSeconds": "stop_grace_s",
    "imagePullSecrets": "image_pull_secrets",
}
"""Pod-spec fields trainyard sets itself, and the pool key that sets each instead."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toleration(_Strict):
    """One toleration of the trials' pods (the pod spec's `tolerations` entry)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """None tolerates every effect of the taint."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """With NoExecute: how long a pod stays on a node that gets the taint."""

    @model_validator(mode="after")
    def _operator_matches(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("operator Exists takes no value; remove value or use Equal")
        if self.operator == "Equal" and self.key is None:
            raise ValueError("operator Equal needs a key (an empty key needs operator Exists)")
        return self


class DataVolume(_Strict):
    """The shared volume (a ReadWriteMany PersistentVolumeClaim) for data, checkpoints and logs.

    The trial spec names paths as the Master sees them, so `mount_path` must be where the
    Master has the same volume: its TRAINYARD_HOME, or a folder above it.
    """

    claim: DnsLabel
    """Name of the PersistentVolumeClaim in the pool's namespace."""
    mount_path: str = Field(pattern=r"^/")
    sub_path: str | None = None
    """A folder of the volume to mount instead of its root."""
    read_only: bool = False


class StagingVolume(_Strict):
    """A node-local disk (NVMe) for the staging cache, mounted over the cache folder of the
    shared volume: each node stages its own copy once, and trials on that node read it at
    local-disk speed (docs/operators/kubernetes.md, "Node-local NVMe staging")."""

    host_path: str = Field(pattern=r"^/")
    """The folder on every node of the pool (created when missing)."""
    mount_path: str = Field(pattern=r"^/")
    """Where the pods see it: the Master's <TRAINYARD_HOME>/cache/staged."""


class Volumes(_Strict):
    data: DataVolume
    staging: StagingVolume | None = None


class KubernetesPoolSpec(_Strict):
    """One namespace of a Kubernetes cluster as a pool: each trial an Indexed Job.

    A slot is one GPU (or, with gpus_per_pod 0, one CPU rank). A trial of N slots on pods of
    G slots gets ceil(N / G) pods of min(N, G) ranks each, started by torchrun in each pod.
    """

    kubeconfig: Path | None = None
    """The kubeconfig file; default: $KUBECONFIG or ~/.kube/config (not with in_cluster)."""
    context: str | None = None
    """The kubeconfig's context; default: its current-context."""
    in_cluster: bool = False
    """Use the service account of the pod the Master runs in (a facility server on the
    cluster) instead of a kubeconfig."""
    namespace: DnsLabel
    """Where the trials' Jobs, Services and Secrets are created."""
    image: str = Field(min_length=1)
    """The container image with trainyard installed (deploy/docker/Dockerfile)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[DnsLabel] = Field(default_factory=list)
    service_account: DnsLabel | None = None
    """The pods' service account; default: the namespace's `default`."""
    python: str = "python3"
    """The Python in the image that has trainyard installed."""
    gpus_per_pod: int = Field(default=1, ge=0)
    """GPUs each pod asks for (nvidia.com/gpu); 0 for CPU-only pods."""
    gpus_per_node: int | None = Field(default=None, gt=0)
    """GPUs the pool's nodes have; a pod cannot ask for more."""
    ranks_per_pod: int | None = Field(default=None, gt=0)
    """Ranks (slots) per pod in a CPU-only pool (gpus_per_pod 0); default 1."""
    cpus_per_gpu: int = Field(default=4, gt=0)
    """CPU cores per GPU (per rank in a CPU-only pool), requested and limited."""
    memory_per_gpu: str = Field(default="32Gi", pattern=QUANTITY)
    """Memory per GPU (per rank in a CPU-only pool), requested and limited."""
    shm_size: str | None = Field(default=None, pattern=QUANTITY)
    """Size limit of /dev/shm (a memory volume, counted in the pod's memory); default: none."""
    extra_resources: dict[str, int] = Field(default_factory=dict)
    """Further resources each pod asks for, e.g. {rdma/rdma_shared_device_a: 1}."""
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class: DnsLabel | None = None
    """A PriorityClass for the trials' pods (preemption order among the cluster's work)."""
    kueue_queue: DnsLabel | None = None
    """A Kueue LocalQueue: the Jobs carry kueue.x-k8s.io/queue-name and wait suspended until
    Kueue admits them under the queue's quota."""
    volumes: Volumes
    pod_annotations: dict[LabelKey, str] = Field(default_factory=dict)
    """Annotations of the pods, e.g. k8s.v1.cni.cncf.io/networks for an SR-IOV network."""
    pod_spec: dict[str, Any] = Field(default_factory=dict)
    """Further pod-spec fields, as Kubernetes writes them (camelCase), merged into the pods'
    spec: e.g. {hostNetwork: true, dnsPolicy: ClusterFirstWithHostNet}."""
    run_as_user: int = Field(default=1000, gt=0)
    """The non-root user (and group) the containers run as."""
    capabilities: list[Annotated[str, Field(pattern=r"^[A-Z_]+$")]] = Field(default_factory=list)
    """Linux capabilities the container keeps (all others are dropped), e.g. [IPC_LOCK] for
    RDMA's pinned memory."""
    max_pods: int = Field(default=1, gt=0)
    """Pods this pool's trials may hold at once (capacity = max_pods x slots per pod)."""
    max_pods_per_trial: int | None = Field(default=None, gt=0)
    """Largest trial, in pods; default: max_pods."""
    stop_grace_s: int = Field(default=120, gt=0)
    """Seconds between SIGTERM and SIGKILL when a trial is stopped: time to checkpoint."""
    ttl_after_finished_s: int = Field(default=3600, ge=0)
    """How long a finished Job (and its pods' logs) stays before Kubernetes deletes it."""

    @field_validator("pod_spec")
    @classmethod
    def _not_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = [key for key in value if key in OWNED_POD_FIELDS]
        if owned:
            uses = "; ".join(f"{key}: use {OWNED_POD_FIELDS[key]}" for key in owned)
            raise ValueError(f"trainyard sets {', '.join(owned)} of the pod spec itself ({uses})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesPoolSpec:
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError(
                "in_cluster uses the pod's service account; remove kubeconfig/context"
            )
        if self.gpus_per_pod and self.ranks_per_pod is not None:
            raise ValueError(
                f"ranks_per_pod is for CPU-only pools; with gpus_per_pod {self.gpus_per_pod} "
                "each GPU is a rank, so remove ranks_per_pod"
            )
        if self.gpus_per_node is not None and self.gpus_per_pod > self.gpus_per_node:
            raise ValueError(
                f"gpus_per_pod ({self.gpus_per_pod}) exceeds gpus_per_node "
                f"({self.gpus_per_node}): such a pod fits no node; lower gpus_per_pod (larger "
                "trials span several pods)"
            )
        if self.max_pods_per_trial is not None and self.max_pods_per_trial > self.max_pods:
            raise ValueError(
                f"max_pods_per_trial ({self.max_pods_per_trial}) exceeds max_pods "
                f"({self.max_pods})"
            )
        return self

    @property
    def slots_per_pod(self) -> int:
        return self.gpus_per_pod or self.ranks_per_pod or 1
