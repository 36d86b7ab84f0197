"""What one trial attempt looks like on Kubernetes: its names, its Job, Service and Secret.

Pure functions of the pool and the trial (no API calls), so what trainyard asks the cluster
for can be read, schema-validated and tested apart from creating and watching it
(kubernetes.py). The objects are the official client's typed models; `manifest` turns one
into the plain mapping that is sent, with the pool's extra pod-spec fields merged in.

Per attempt of N ranks on pods of G slots: an Indexed Job of P = ceil(N / G) pods of
min(N, G) ranks (completions = parallelism = P, backoffLimit 0: a failed pod fails the
attempt, and retrying from the checkpoint is the runner's job), a headless Service that gives
pod i the name <job>-i.<service> (rank 0's pod is the rendezvous), and a Secret with the
attempt's worker credential, which the pods read through secretKeyRef.

A pack (docs/packing.md) is one such attempt of one slot, named after its host trial: its
members' ids are in the pods' environment (and in an annotation, for operators), their
credentials in the Secret beside the host's. A Job's worker key, by which the Master finds a
pack again, is `worker_key` of its uid.
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from trainyard.config.kubernetes_pool import KubernetesPoolSpec, Toleration
from trainyard.executors.base import WorkerLaunch
from trainyard.protocol import PACK_TOKENS_ENV, PACK_TRIAL_IDS_ENV

WORKER_MODULE = "trainyard.worker"
RENDEZVOUS_PORT = 29500
LABEL_PREFIX = "trainyard.io/"
MANAGED_BY = {"app.kubernetes.io/managed-by": "trainyard"}
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
PACK_ANNOTATION = LABEL_PREFIX + "pack-trials"
"""On a pack's Job: its trial ids at launch, comma-separated (the host first)."""
SECRET_ENV = {"TRAINYARD_TOKEN": "token", PACK_TOKENS_ENV: "pack-tokens"}
"""Variables that hold credentials: each is a key of the attempt's Secret, never clear text."""
_MAX_EXPERIMENT = 30
"""Characters of the experiment's name in object names: pod names (<job>-<index>) and the
job-name label must stay within 63."""

_POD_SCRIPT = """\
mkdir -p "$(dirname "$TRAINYARD_LOG")"
exec > >(tee -a "$TRAINYARD_LOG") 2>&1
echo "trainyard: pod $HOSTNAME, index $JOB_COMPLETION_INDEX of $TRAINYARD_NUM_PODS, $(date -Is)"
"""


@dataclass(frozen=True)
class TrialNames:
    """The names of one attempt's objects and the labels that find them again."""

    experiment: str
    """The experiment's name as a DNS-1123 label (see `dns_label`)."""
    trial_id: int
    attempt: int

    @property
    def job(self) -> str:
        return f"ty-{self.experiment}-{self.trial_id}-{self.attempt}"

    @property
    def service(self) -> str:
        return self.job

    @property
    def secret(self) -> str:
        return f"{self.job}-credential"

    def labels(self) -> dict[str, str]:
        return {
            **MANAGED_BY,
            LABEL_PREFIX + "experiment": self.experiment,
            LABEL_PREFIX + "trial": str(self.trial_id),
            LABEL_PREFIX + "attempt": str(self.attempt),
        }


def experiment_selector(experiment: str) -> str:
    """The label selector of every object of an experiment (its name as `dns_label` gives)."""
    return f"app.kubernetes.io/managed-by=trainyard,{LABEL_PREFIX}experiment={experiment}"


def worker_key(uid: str) -> int:
    """A Job's worker key (`Executor.worker_key`, stored on its trials): the first 63 bits of
    the SHA-256 of its uid. The uid is the cluster's for that one Job, never reused, even by a
    later Job of the same name; 63 bits keep the key a positive BigInteger, and two of an
    experiment's Jobs share one with a chance of about n^2 / 2^64. A restarted Master finds
    the Job again by hashing the uids of the experiment's Jobs it lists."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") >> 1


def dns_label(name: str) -> str:
    """`name` as a DNS-1123 label of at most 30 characters, for object names and labels.

    Lower case; every run of other characters than a-z, 0-9 becomes one '-'. A name that had
    to change gets the first 6 hex digits of its SHA-256 appended, so two experiments whose
    names differ only in what was replaced keep different objects.
    """
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if label == name and len(label) <= _MAX_EXPERIMENT:
        return label
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    head = label[: _MAX_EXPERIMENT - 7].strip("-")
    return f"{head}-{digest}" if head else f"x-{digest}"


def pod_layout(spec: KubernetesPoolSpec, num_slots: int) -> tuple[int, int]:
    """(pods, ranks per pod) of a trial: ceil(N / G) pods of min(N, G) ranks."""
    return math.ceil(num_slots / spec.slots_per_pod), min(num_slots, spec.slots_per_pod)


def multiply_quantity(quantity: str, times: int) -> str:
    """A Kubernetes quantity times a whole number, in the same unit (32Gi x 2 = 64Gi)."""
    number, unit = re.fullmatch(r"([0-9.]+)(.*)", quantity).groups()  # type: ignore[union-attr]
    total = Decimal(number) * times
    text = format(total.normalize(), "f") if total != total.to_integral() else str(int(total))
    return text + unit


def build_secret(names: TrialNames, launch: WorkerLaunch, namespace: str) -> client.V1Secret:
    """The attempt's credential(s), read by the pods through secretKeyRef."""
    data = {key: launch.env[var] for var, key in SECRET_ENV.items() if var in launch.env}
    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(
            name=names.secret, namespace=namespace, labels=names.labels()
        ),
        type="Opaque",
        string_data=data,
    )


def build_service(names: TrialNames, namespace: str) -> client.V1Service:
    """Headless, and publishing pods before they are ready: rank 0's pod is resolvable as
    soon as it has an address, which the other pods need to rendezvous at all."""
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(
            name=names.service, namespace=namespace, labels=names.labels()
        ),
        spec=client.V1ServiceSpec(
            cluster_ip="None",
            publish_not_ready_addresses=True,
            selector={LABEL_PREFIX + "job": names.job},
            ports=[client.V1ServicePort(name="rendezvous", port=RENDEZVOUS_PORT)],
        ),
    )


def build_job(
    spec: KubernetesPoolSpec, names: TrialNames, launch: WorkerLaunch, *, experiment_name: str
) -> client.V1Job:
    """The attempt's Indexed Job, created suspended: the executor resumes it once its Secret
    and Service exist (or, with a Kueue queue, Kueue does when it admits it)."""
    num_pods, ranks = pod_layout(spec, launch.num_slots)
    labels = names.labels()
    annotations = {LABEL_PREFIX + "experiment-name": experiment_name}
    if launch.env.get(PACK_TRIAL_IDS_ENV):
        annotations[PACK_ANNOTATION] = launch.env[PACK_TRIAL_IDS_ENV]
    job_labels = {**labels, KUEUE_QUEUE_LABEL: spec.kueue_queue} if spec.kueue_queue else labels
    pod_meta = client.V1ObjectMeta(
        labels={**labels, LABEL_PREFIX + "job": names.job},
        annotations=dict(spec.pod_annotations) or None,
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(
            name=names.job,
            namespace=spec.namespace,
            labels=job_labels,
            annotations=annotations,
        ),
        spec=client.V1JobSpec(
            completion_mode="Indexed",
            completions=num_pods,
            parallelism=num_pods,
            backoff_limit=0,
            ttl_seconds_after_finished=spec.ttl_after_finished_s,
            suspend=True,
            template=client.V1PodTemplateSpec(
                metadata=pod_meta, spec=_pod_spec(spec, names, launch, num_pods, ranks)
            ),
        ),
    )


def manifest(obj: Any, spec: KubernetesPoolSpec | None = None) -> dict[str, Any]:
    """The object as the API receives it; for a Job, with the pool's `pod_spec` fields merged
    into its pods' spec (they never name a field trainyard sets, config/kubernetes_pool.py)."""
    body: dict[str, Any] = ApiClient().sanitize_for_serialization(obj)
    if spec is not None and spec.pod_spec:
        body["spec"]["template"]["spec"].update(spec.pod_spec)
    return body


def _pod_spec(
    spec: KubernetesPoolSpec, names: TrialNames, launch: WorkerLaunch, num_pods: int, ranks: int
) -> client.V1PodSpec:
    return client.V1PodSpec(
        restart_policy="Never",
        subdomain=names.service,
        service_account_name=spec.service_account,
        automount_service_account_token=False,
        termination_grace_period_seconds=spec.stop_grace_s,
        node_selector=dict(spec.node_selector) or None,
        tolerations=[_toleration(t) for t in spec.tolerations] or None,
        priority_class_name=spec.priority_class,
        image_pull_secrets=[client.V1LocalObjectReference(name=n) for n in spec.image_pull_secrets]
        or None,
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=spec.run_as_user,
            run_as_group=spec.run_as_user,
            fs_group=spec.run_as_user,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[_container(spec, names, launch, num_pods, ranks)],
        volumes=_volumes(spec),
    )


def _container(
    spec: KubernetesPoolSpec, names: TrialNames, launch: WorkerLaunch, num_pods: int, ranks: int
) -> client.V1Container:
    amounts = {
        "cpu": str(spec.cpus_per_gpu * ranks),
        "memory": multiply_quantity(spec.memory_per_gpu, ranks),
        **{name: str(count) for name, count in spec.extra_resources.items()},
    }
    if spec.gpus_per_pod:
        amounts[spec.gpu_resource] = str(ranks)
    return client.V1Container(
        name="worker",
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        command=["bash", "-c", _pod_script(spec, launch), "trainyard-pod"],
        args=_torchrun(spec, launch, num_pods, ranks),
        working_dir=str(launch.workdir) if launch.workdir else None,
        env=_env(spec, names, launch, num_pods),
        resources=client.V1ResourceRequirements(limits=amounts, requests=amounts),
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"], add=list(spec.capabilities) or None),
        ),
        volume_mounts=_mounts(spec),
    )


def _pod_script(spec: KubernetesPoolSpec, launch: WorkerLaunch) -> str:
    """Each pod's shell: its output to the trial's log on the shared volume (and to the pod's
    own log), then exec torchrun, which gets the stop signal as the container's process."""
    script = _POD_SCRIPT
    if launch.command is not None and "/" in spec.python:  # `python` means the image's
        script += f"export PATH={shlex.quote(str(Path(spec.python).parent))}:$PATH\n"
    return script + 'exec "$@"\n'


def _torchrun(
    spec: KubernetesPoolSpec, launch: WorkerLaunch, num_pods: int, ranks: int
) -> list[str]:
    """torchrun's static rendezvous at rank 0's pod; $(VAR) is expanded by the kubelet."""
    agent = [
        spec.python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={num_pods}",
        f"--nproc-per-node={ranks}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "--max-restarts=0",
    ]
    if launch.command is not None:
        return [*agent, "--no-python", *launch.command]
    return [*agent, "-m", WORKER_MODULE]


def _env(
    spec: KubernetesPoolSpec, names: TrialNames, launch: WorkerLaunch, num_pods: int
) -> list[client.V1EnvVar]:
    clear = {name: value for name, value in launch.env.items() if name not in SECRET_ENV}
    clear |= {
        "TRAINYARD_LOG": str(launch.log_path),
        "TRAINYARD_NUM_PODS": str(num_pods),
        "TRAINYARD_NUM_THREADS": str(spec.cpus_per_gpu),
        "OMP_NUM_THREADS": str(spec.cpus_per_gpu),
        "MASTER_ADDR": f"{names.job}-0.{names.service}",
        "MASTER_PORT": str(RENDEZVOUS_PORT),
    }
    env = [client.V1EnvVar(name=name, value=value) for name, value in sorted(clear.items())]
    index = client.V1ObjectFieldSelector(field_path=f"metadata.annotations['{INDEX_ANNOTATION}']")
    env.append(
        client.V1EnvVar(
            name="JOB_COMPLETION_INDEX", value_from=client.V1EnvVarSource(field_ref=index)
        )
    )
    for var, key in SECRET_ENV.items():
        if var in launch.env:
            ref = client.V1SecretKeySelector(name=names.secret, key=key)
            env.append(
                client.V1EnvVar(name=var, value_from=client.V1EnvVarSource(secret_key_ref=ref))
            )
    return env


def _volumes(spec: KubernetesPoolSpec) -> list[client.V1Volume]:
    data = spec.volumes.data
    volumes = [
        client.V1Volume(
            name="dshm",
            empty_dir=client.V1EmptyDirVolumeSource(medium="Memory", size_limit=spec.shm_size),
        ),
        client.V1Volume(
            name="data",
            persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                claim_name=data.claim, read_only=data.read_only or None
            ),
        ),
    ]
    if spec.volumes.staging is not None:
        host = client.V1HostPathVolumeSource(
            path=spec.volumes.staging.host_path, type="DirectoryOrCreate"
        )
        volumes.append(client.V1Volume(name="staging", host_path=host))
    return volumes


def _mounts(spec: KubernetesPoolSpec) -> list[client.V1VolumeMount]:
    data = spec.volumes.data
    mounts = [
        client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        client.V1VolumeMount(
            name="data",
            mount_path=data.mount_path,
            sub_path=data.sub_path,
            read_only=data.read_only or None,
        ),
    ]
    if spec.volumes.staging is not None:
        mounts.append(
            client.V1VolumeMount(name="staging", mount_path=spec.volumes.staging.mount_path)
        )
    return mounts


def _toleration(toleration: Toleration) -> client.V1Toleration:
    return client.V1Toleration(
        key=toleration.key,
        operator=toleration.operator,
        value=toleration.value,
        effect=toleration.effect,
        toleration_seconds=toleration.toleration_seconds,
    )
