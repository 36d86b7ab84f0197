"""The experiment file as typed, frozen pydantic models.

Everything after `config.loader` reads these objects, never a raw dict. Each field's docstring is
what a physicist sees when looking up a key, so it says what the key does and its default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from trainyard.config._strict import SECTION_ERROR
from trainyard.config._strict import Strict as _Strict
from trainyard.config.entrypoint import EntrypointSpec
from trainyard.config.packing import pack_problems, pack_setting
from trainyard.config.tracking import TrackingSpec


class Length(_Strict):
    """A span of training, in whole epochs or in batches (exactly one of the two)."""

    epochs: int | None = Field(default=None, gt=0)
    batches: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Length:
        if (self.epochs is None) == (self.batches is None):
            raise ValueError("give exactly one of `epochs` or `batches`, e.g. {epochs: 5}")
        return self


class IntRange(_Strict):
    """Integers from `min` to `max`, both included."""

    type: Literal["int"]
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self


class DoubleRange(_Strict):
    """Real numbers uniformly between `min` and `max`."""

    type: Literal["double"]
    min: float
    max: float
    count: int | None = Field(default=None, ge=2)
    """Grid points (evenly spaced, ends included); required by the grid searcher."""

    @model_validator(mode="after")
    def _ordered(self) -> DoubleRange:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be smaller than max ({self.max})")
        return self


class LogRange(_Strict):
    """Positive reals log-uniformly between `min` and `max` (learning rates, weight decay)."""

    type: Literal["log"]
    min: float = Field(gt=0)
    max: float = Field(gt=0)
    count: int | None = Field(default=None, ge=2)
    """Grid points (log-spaced, ends included); required by the grid searcher."""

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be smaller than max ({self.max})")
        return self


class Categorical(_Strict):
    """One of a list of values."""

    type: Literal["categorical"]
    vals: list[Any] = Field(min_length=1)


SEARCH_SPACE_TYPES = ("int", "double", "log", "categorical")
Constant = StrictBool | StrictInt | float | str | list[Any]


def _hyperparameter_kind(value: Any) -> str:
    """A mapping with `type` is a search space; anything else is a constant.

    Pydantic also calls this when serializing, with the parsed search-space model: it must
    name that model's tag too, or every dump warns that a range is not a constant.
    """
    if isinstance(value, dict):
        return str(value.get("type", "missing-type"))
    if isinstance(value, IntRange | DoubleRange | LogRange | Categorical):
        return value.type
    return "constant"


Hyperparameter = Annotated[
    Annotated[Constant, Tag("constant")]
    | Annotated[IntRange, Tag("int")]
    | Annotated[DoubleRange, Tag("double")]
    | Annotated[LogRange, Tag("log")]
    | Annotated[Categorical, Tag("categorical")],
    Discriminator(
        _hyperparameter_kind,
        custom_error_type="hyperparameter_type",
        custom_error_message=(
            "a search space needs `type` set to one of int, double, log, categorical"
        ),
    ),
]


class SearcherName(StrEnum):
    """Search algorithms the schema accepts."""

    SINGLE = "single"
    GRID = "grid"
    RANDOM = "random"
    ASHA = "asha"
    TPE = "tpe"


class ModelSpec(_Strict):
    """Which network to train: a zoo name, a user `package.module:callable`, or a weaver
    network file `path/to/network.py`."""

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the model builder (e.g. `k: 16` for ParticleNet), or for a
    network file's get_model and get_loss."""

    def is_network_file(self) -> bool:
        """A path ending in .py (the rule of models.network_file.is_network_file)."""
        return self.name.endswith(".py") and ":" not in self.name


DEFAULT_MAX_PARTICLES = 128


class DataInputs(_Strict):
    """Which input groups of a weaver data config feed the model's inputs; only those the
    model takes are read (ParticleNet: points, features, mask; Particle Transformer:
    features, vectors, mask; PFN: features, mask)."""

    points: str = "pf_points"
    """Coordinates for the k-nearest-neighbour graph, (C, P)."""
    features: str = "pf_features"
    """Per-particle features, (C, P); C is the model's num_features."""
    mask: str = "pf_mask"
    """1 for real particles, 0 for padding, (1, P)."""
    vectors: str | None = None
    """Lorentz vectors (px, py, pz, energy), (4, P), for models with pair features such as
    Particle Transformer; e.g. pf_vectors."""


class DataSpec(_Strict):
    """Where the jets are and how they become model inputs. Relative paths are resolved
    against the folder `trainyard` runs in."""

    train: str | list[str]
    """Glob(s) of training Parquet files."""
    val: str | list[str]
    """Glob(s) of validation Parquet files."""
    config: str | None = None
    """A weaver-core YAML data config (e.g. particle_transformer's top_kin.yaml); default:
    the built-in ParticleNet inputs (TopLandscape top_kin features, `max_particles` long)."""
    max_particles: int = Field(default=DEFAULT_MAX_PARTICLES, gt=0, le=200)
    """Built-in inputs only: constituents per jet (padded or truncated); with `config` the
    config's input lengths decide."""
    inputs: DataInputs = DataInputs()
    """With `config` only: the config's input groups that feed points, features, mask and
    vectors."""
    signal_class: int | None = Field(default=None, ge=0)
    """Class index scored as signal for val_auc and the rejections; default: 1 for the built-in
    inputs (label 1 = top), 0 with `config` (weaver's `labels.value` lists top first in
    top_kin: [jet_isTop, jet_isQCD])."""
    background_class: Annotated[StrictInt, Field(ge=0)] | str | None = None
    """With more than two classes: the class (its `labels.value` name or its index) that every
    other class's val_rej50_<class>, val_rej99_<class> and val_rej995_<class> are measured
    against; default: the one class named like QCD (JetClass's label_QCD), if there is one."""

    @model_validator(mode="after")
    def _config_keys_go_together(self) -> DataSpec:
        # Compared with the defaults, not with the keys given: stored configs are full dumps.
        if self.config is None and self.inputs != DataInputs():
            raise ValueError(
                "`inputs` maps the input groups of a weaver data config; set `config` too, "
                "or remove `inputs` to use the built-in ParticleNet inputs"
            )
        if self.config is not None and self.max_particles != DEFAULT_MAX_PARTICLES:
            raise ValueError(
                "`max_particles` is for the built-in inputs; with `config` the input groups' "
                "`length` in the data config sets the particles per jet, so remove one of them"
            )
        return self


class AshaSpec(_Strict):
    """Early stopping for `asha`: successive halving over validation rungs (Optuna's pruners)."""

    sampler: Literal["random", "tpe", "grid"] = "random"
    """How trials are proposed; grid runs ASHA over every point of the grid."""
    pruner: Literal["successive_halving", "hyperband"] = "successive_halving"
    min_batches: int | None = Field(default=None, gt=0)
    """Batches a trial trains before its first rung; default: the first validation."""
    reduction_factor: int = Field(default=3, ge=2)
    """Keep the best 1/reduction_factor of trials at each rung."""


class SearcherSpec(_Strict):
    """How trials are proposed and which metric ranks them."""

    name: SearcherName = SearcherName.SINGLE
    metric: str = "val_auc"
    """A validation metric: val_loss, val_accuracy, val_auc, val_rej30 or val_rej50; with more
    than two classes also val_auc_macro, val_auc_<class> and the per-class rejections
    (docs/models.md)."""
    mode: Literal["max", "min"] = "max"
    max_trials: int | None = Field(default=None, gt=0)
    """Trials to run in all. single: 1; grid: default and at most the grid size; random, tpe
    and asha: required."""
    seed: int = Field(default=0, ge=0)
    """Seed of the sampler, so a search can be repeated."""
    asha: AshaSpec = AshaSpec()


class ResourcesSpec(_Strict):
    """What each trial gets from the pool."""

    slots_per_trial: int = Field(default=1, gt=0)
    """GPUs per trial; on a machine without GPUs, groups of CPU threads."""
    pool: str = "default"
    max_concurrent_trials: int = Field(default=1, gt=0)
    weight: float = Field(default=1.0, gt=0, le=1000)
    """On a `trainyard server`: this experiment's weight among its project's experiments in
    the project's share of the pool (determined's resources.weight); 2 gets twice the slots
    of 1 when they contend."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when the executor gives the trial a GPU, else CPU."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """How a multi-slot trial is split: ddp (replicas), fsdp (sharded parameters, gradients and
    optimizer state), or auto: fsdp when those would exceed `fsdp_memory_fraction` of one
    device's memory, else ddp."""
    fsdp_memory_fraction: float = Field(default=0.5, gt=0, le=1)
    pack: Annotated[Literal["auto", "off"] | int, BeforeValidator(pack_setting)] = "off"
    """Train several trials of a search together in one worker on one device, as one fused
    model (docs/packing.md): off, a number of trials per worker, or auto (pack where it gains
    on the device). Packed trials may differ only in lr, weight_decay, momentum, dropout and
    seed. Local and SLURM pools (Kubernetes keeps one trial per worker); the runner starts
    up to that many queued trials per worker."""


class OptimizerSpec(_Strict):
    """The optimizer; `lr` and `weight_decay` may be overridden by hyperparameters of that name."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    """Only for sgd."""


class LRScheduleSpec(_Strict):
    """Learning rate over training: linear warm-up, then constant, cosine or step decay."""

    name: Literal["constant", "cosine", "step"] = "constant"
    warmup_batches: int = Field(default=0, ge=0)
    step_every_batches: int = Field(default=1000, gt=0)
    """Only for step: decay interval."""
    gamma: float = Field(default=0.1, gt=0, le=1)
    """Only for step: decay factor."""
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    """Only for cosine: final lr as a fraction of the initial lr."""


class TrainingSpec(_Strict):
    """The training loop."""

    max_length: Length
    batch_size: int = Field(default=256, gt=0)
    """Global batch size; may be overridden by a hyperparameter `batch_size`."""
    optimizer: OptimizerSpec = OptimizerSpec()
    lr_schedule: LRScheduleSpec = LRScheduleSpec()
    scale_lr: Literal["none", "linear", "sqrt"] = "none"
    """Scale the lr with the number of ranks (the global batch stays `batch_size`)."""
    sync_batchnorm: bool = False
    """BatchNorm statistics over the global batch instead of each rank's share."""
    grad_clip_norm: float | None = Field(default=None, gt=0)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on GPUs that support it, full precision elsewhere."""
    validation_period: Length = Length(epochs=1)
    log_period_batches: int = Field(default=20, gt=0)
    seed: int = Field(default=0, ge=0)
    deterministic: bool = True
    """Deterministic kernels, so a resumed run reproduces an uninterrupted one."""
    on_nonfinite: Literal["error", "skip_batch"] = "error"
    """A NaN or infinite loss: `error` stops the trial with the batch and the last finite
    checkpoint named (a retry resumes from it); `skip_batch` drops that batch's update and
    goes on (this checks every step, which waits for the device once per batch)."""


class CheckpointSpec(_Strict):
    """When checkpoints are written and how many are kept."""

    period: Length = Length(epochs=1)
    keep: int = Field(default=2, gt=0)


MODEL_SECTIONS = ("model", "data", "training")
"""What the built-in loop needs; a script trial (`entrypoint`) has its own."""


class _Absent:
    """Stands in, before validation, for a section whose presence is wrong for the kind of
    trial; its field's check names the problem (so every problem is still reported at once)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _section_for_kind(value: Any) -> Any:
    if isinstance(value, _Absent):
        raise PydanticCustomError(SECTION_ERROR, value.problem)
    return value


_SCRIPT_OWNS = {"model": "model", "data": "data loading", "training": "training loop"}


class ExperimentConfig(_Strict):
    """One experiment file: a built-in `model` with its `data` and `training`, or the user's
    own script (`entrypoint`); everything else applies to both."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    entrypoint: EntrypointSpec | None = None
    """Run this command as each trial instead of the built-in loop (docs/users/scripts.md)."""
    model: Annotated[ModelSpec | None, BeforeValidator(_section_for_kind)] = None
    data: Annotated[DataSpec | None, BeforeValidator(_section_for_kind)] = None
    hyperparameters: dict[str, Hyperparameter] = Field(default_factory=dict)
    searcher: SearcherSpec = SearcherSpec()
    resources: ResourcesSpec = ResourcesSpec()
    training: Annotated[TrainingSpec | None, BeforeValidator(_section_for_kind)] = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    tracking: TrackingSpec = TrackingSpec()
    max_restarts: int = Field(default=2, ge=0)
    """Times a failed trial is retried from its last checkpoint before it counts as errored."""

    @model_validator(mode="before")
    @classmethod
    def _model_shorthand(cls, data: Any) -> Any:
        """`model: particlenet` is short for `model: {name: particlenet}`; then each of model,
        data and training is marked when it is missing for a built-in model, or given for a
        script. (Stored configs are full dumps, so an absent section may be None.)"""
        if not isinstance(data, dict):
            return data
        if isinstance(data.get("model"), str):
            data = {**data, "model": {"name": data["model"]}}
        data = dict(data)
        script = data.get("entrypoint") is not None
        for key in MODEL_SECTIONS:
            given = data.get(key) is not None
            if script and given:
                data[key] = _Absent(
                    f"a script trial (`entrypoint`) has its own {_SCRIPT_OWNS[key]}; remove "
                    f"`{key}`, or remove `entrypoint` to train a built-in model"
                )
            elif not script and not given:
                data[key] = _Absent(
                    "required key is missing (or give `entrypoint` to run your own training "
                    "script instead of model, data and training)"
                )
        return data

    @model_validator(mode="after")
    def _script_settings(self) -> ExperimentConfig:
        """Settings of the built-in loop that a script trial cannot honour, named."""
        if self.entrypoint is None:
            return self
        problems = []
        if self.resources.pack != "off":
            problems.append(
                "`resources.pack`: script trials run one trial per process; set it to off"
            )
        if self.checkpoint.period != CheckpointSpec().period:
            problems.append(
                "`checkpoint.period`: a script saves when it calls ctx.checkpoint.save; "
                "remove the period (`checkpoint.keep` still applies)"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _pack_fits(self) -> ExperimentConfig:
        """An explicit pack size must fit the search, the slots and the precision; each line
        names its own key (the loader prints them as they are)."""
        if self.training is None:  # a script trial: `_script_settings` checks the pack
            return self
        problems = pack_problems(
            pack=self.resources.pack,
            searched=self.search_space_names(),
            slots_per_trial=self.resources.slots_per_trial,
            amp=self.training.amp,
        )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def search_space_names(self) -> list[str]:
        """Hyperparameters that a searcher must choose a value for."""
        return [k for k, v in self.hyperparameters.items() if isinstance(v, _Strict)]
