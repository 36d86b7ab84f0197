"""The facility file: which pools of machines trainyard may use, and how to reach each one.

Written once by a facility's operators, not by physicists: an experiment only names a pool
(`resources.pool`). Without a facility file there is one pool, "default", on this machine.
Validated like the experiment file: every problem at once, with key paths and did-you-mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from trainyard.config.kubernetes_pool import KubernetesPoolSpec
from trainyard.config.loader import format_validation_error
from trainyard.errors import ConfigError
from trainyard.suggest import did_you_mean

_MEMORY = r"^[0-9]+[KMGT]?$"
_TIME = r"^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$"
PoolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlurmPoolSpec(_Strict):
    """One SLURM partition (or a slice of one) as a pool: how trials become sbatch jobs.

    A slot is one GPU on GPU partitions and one task (a group of CPU cores) on CPU-only ones.
    A trial of N slots on nodes of G slots gets ceil(N / G) nodes with min(N, G) tasks each,
    one worker rank per task.
    """

    partition: str = Field(min_length=1)
    account: str | None = None
    """Charged account (sbatch --account); default: the user's default account."""
    qos: str | None = None
    gpus_per_node: int = Field(default=0, ge=0)
    """GPUs each node of the partition gives a job; 0 for a CPU-only partition."""
    cpus_per_gpu: int = Field(default=4, gt=0)
    """CPU cores per GPU (GPU partitions): data loading and the worker's threads."""
    mem_per_gpu: str | None = Field(default=None, pattern=_MEMORY)
    """Host memory per GPU, as SLURM writes it (e.g. 64G); default: the partition's."""
    tasks_per_node: int | None = Field(default=None, gt=0)
    """Slots per node on a CPU-only partition (required there)."""
    cpus_per_task: int = Field(default=1, gt=0)
    """CPU cores per slot on a CPU-only partition."""
    mem_per_task: str | None = Field(default=None, pattern=_MEMORY)
    """Memory per slot on a CPU-only partition (e.g. 8G); default: the partition's."""
    max_nodes: int = Field(default=1, gt=0)
    """Nodes this pool's trials may hold at once: the pool's capacity is max_nodes x slots
    per node, and trials beyond it wait in trainyard's queue rather than SLURM's."""
    max_nodes_per_trial: int | None = Field(default=None, gt=0)
    """Largest trial, in nodes; default: max_nodes."""
    time_limit: str | None = Field(default=None, pattern=_TIME)
    """Wall-clock limit per job (sbatch --time, e.g. 1-00:00:00). A trial that needs longer
    is stopped with a checkpoint before the limit and continues in a new job."""
    stop_before_time_limit_s: int = Field(default=300, ge=60)
    """How long before time_limit the workers are told to checkpoint and stop."""
    sbatch_options: list[str] = Field(default_factory=list)
    """Further sbatch options, each as one word (e.g. --constraint=a100, --exclusive)."""
    srun_options: list[str] = Field(default_factory=list)
    """Further srun options for the workers (e.g. --container-image=... with pyxis)."""
    setup: list[str] = Field(default_factory=list)
    """Shell lines the job runs before its workers (module load ..., source .../activate)."""
    container: str | None = None
    """Command the worker runs inside, e.g. `apptainer exec --nv /images/trainyard.sif`."""
    python: str | None = None
    """Python on the nodes that has trainyard installed; default: the one running trainyard
    (the nodes see the same filesystem, as they must for data and checkpoints)."""
    status_interval_s: float = Field(default=2.0, gt=0)
    """Least time between two squeue calls, to spare slurmctld."""

    @model_validator(mode="after")
    def _gpu_or_cpu(self) -> SlurmPoolSpec:
        if self.gpus_per_node == 0 and self.tasks_per_node is None:
            raise ValueError(
                "a CPU-only pool (gpus_per_node 0) needs tasks_per_node, its slots per node; "
                "a GPU partition needs gpus_per_node"
            )
        if self.gpus_per_node and self.tasks_per_node is not None:
            raise ValueError(
                f"tasks_per_node is for CPU-only pools; with gpus_per_node "
                f"{self.gpus_per_node} each GPU is a slot, so remove tasks_per_node"
            )
        if self.gpus_per_node and self.mem_per_task is not None:
            raise ValueError("mem_per_task is for CPU-only pools; use mem_per_gpu")
        if self.gpus_per_node == 0 and self.mem_per_gpu is not None:
            raise ValueError("mem_per_gpu needs gpus_per_node; use mem_per_task on CPU pools")
        if self.max_nodes_per_trial is not None and self.max_nodes_per_trial > self.max_nodes:
            raise ValueError(
                f"max_nodes_per_trial ({self.max_nodes_per_trial}) exceeds max_nodes "
                f"({self.max_nodes})"
            )
        return self

    @property
    def slots_per_node(self) -> int:
        return self.gpus_per_node or self.tasks_per_node or 1


class PoolSpec(_Strict):
    """A named group of machines an experiment can run on."""

    executor: Literal["local", "slurm", "kubernetes"] = "local"
    """local: this machine's GPUs or CPU cores; slurm: jobs on a SLURM cluster; kubernetes:
    Jobs on a Kubernetes cluster."""
    slurm: SlurmPoolSpec | None = None
    """Required with executor: slurm."""
    kubernetes: KubernetesPoolSpec | None = None
    """Required with executor: kubernetes."""

    @model_validator(mode="after")
    def _section_matches(self) -> PoolSpec:
        for kind, section in (("slurm", self.slurm), ("kubernetes", self.kubernetes)):
            if self.executor == kind and section is None:
                first = "partition" if kind == "slurm" else "namespace, image"
                raise ValueError(f"executor {kind} needs a `{kind}:` section ({first}, ...)")
            if self.executor != kind and section is not None:
                raise ValueError(f"a `{kind}:` section needs executor: {kind}")
        return self


class FacilityConfig(_Strict):
    """One facility file."""

    pools: dict[PoolName, PoolSpec] = Field(min_length=1)
    _source: str = PrivateAttr(default="built-in facility (one local pool, 'default')")

    @property
    def source(self) -> str:
        """Where this configuration came from, for messages."""
        return self._source

    def pool(self, name: str) -> PoolSpec:
        """The pool an experiment asked for (`resources.pool`).

        Raises:
            ConfigError: no pool has that name; the message lists the pools.
        """
        if name in self.pools:
            return self.pools[name]
        hint = did_you_mean(name, self.pools)
        raise ConfigError(
            [
                f"`resources.pool`: no pool {name!r} in {self.source}; {hint}"
                f"pools: {', '.join(sorted(self.pools))}"
            ],
            source="experiment file",
        )


def load_facility(path: Path | str | None) -> FacilityConfig:
    """The facility file at `path`, or the built-in one local pool when `path` is None.

    Raises:
        ConfigError: the file is missing, is not YAML, or has any invalid key or value.
    """
    if path is None:
        return FacilityConfig(pools={"default": PoolSpec()})
    path = Path(path)
    source = f"facility file {path}"
    if not path.is_file():
        raise ConfigError(
            [f"no such file: {path.resolve()} (from --facility or TRAINYARD_FACILITY)"],
            source=source,
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {yaml_problem(err)}"], source=source) from err
    return parse_facility(raw, source=source)


def parse_facility(raw: Any, *, source: str = "facility file") -> FacilityConfig:
    """Validate a decoded facility mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"the top level must be a mapping with `pools`, got {type(raw).__name__}"],
            source=source,
        )
    try:
        facility = FacilityConfig.model_validate(raw)
    except ValidationError as err:
        problems = format_validation_error(err, raw, root=FacilityConfig)
        raise ConfigError(problems, source=source) from None
    facility._source = source
    return facility


def yaml_problem(err: yaml.YAMLError) -> str:
    """Where a YAML file stops parsing and why, for the facility and server files."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(err, "problem", None) or str(err))
