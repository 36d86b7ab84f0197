"""The Master's HTTP protocol: every message a worker or client sends or receives, typed once.

Both sides import this module: the Master's routes declare these models as bodies and
responses, the worker parses every answer into them, and the CLI reads the views. Nothing
crosses the wire as a free-form dict, and states travel as enums, so neither side converts
strings by hand. (The local executor and its worker fork server, worker/forkserver.py, speak
the Fork* messages over a pipe.) The module imports only pydantic and the trial config, so a
worker (or a user's script through trainyard.core) can use it without the Master's
dependencies.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from trainyard.config.trial import AnyTrialConfig

API_PREFIX = "/api/v1"
"""Every route but /healthz lives under this prefix."""

PACK_TRIAL_IDS_ENV = "TRAINYARD_PACK_TRIAL_IDS"
"""Set by the runner for a packed worker: its members' trial ids, comma-separated (the first
is the host, whose id is also TRAINYARD_TRIAL_ID)."""
PACK_TOKENS_ENV = "TRAINYARD_PACK_TOKENS"
"""Each member's own worker credential, comma-separated in the order of the ids (tokens are
handed over in the environment only, never on a command line)."""
PACK_SIZE_ENV = "TRAINYARD_PACK_SIZE"
"""Set by the runner for a packed worker: how many trials it may train at once (K); with a
place free it asks the Master for a queued trial to join (docs/packing.md, "Joins")."""

WORKER_TOKEN_PREFIX = "tyw_"
"""Worker credentials start with this, so a leaked one is recognisable (and greppable)."""
API_TOKEN_PREFIX = "typat_"
"""Personal API tokens start with this (trainyard personal access token)."""

MAX_INT = 2**31 - 1
"""The largest id or count the store holds: its integer columns are 32-bit on PostgreSQL, so
larger values (ids beyond 2^63 included) are refused at the edge instead of failing there."""

MAX_METRICS_PER_REPORT = 256
"""A report names at most this many metrics: trainyard's validation sends 5 with two classes
and 4 * classes + 3 with more (JetClass's ten: 43), so up to 63 classes fit."""

MAX_ROC_POINTS = 1000
"""A stored ROC curve has at most this many points (the worker sends 200, see
``trainyard.metrics.ROC_POINTS``)."""

MAX_MESSAGE_CHARS = 65_536
"""An outcome's message (an error with its traceback) is cut to this length by the worker."""


class ExperimentState(StrEnum):
    """Lifecycle of an experiment; PAUSED keeps its trials resumable."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    ERRORED = "ERRORED"
    CANCELED = "CANCELED"

    def is_finished(self) -> bool:
        """True for end states: nothing runs and `ended_at` is set."""
        return self in _FINISHED_EXPERIMENT_STATES


_FINISHED_EXPERIMENT_STATES = frozenset(
    {ExperimentState.COMPLETED, ExperimentState.ERRORED, ExperimentState.CANCELED}
)


class TrialState(StrEnum):
    """Lifecycle of one trial (one hyperparameter setting) of an experiment."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    PAUSED = "PAUSED"
    """Checkpointed and stopped by the user (Ctrl-C, `trainyard pause`); resumes on activate."""
    STOPPED = "STOPPED"
    """Stopped early by the searcher (pruned); final."""
    ERRORED = "ERRORED"
    CANCELED = "CANCELED"

    def is_finished(self) -> bool:
        """True when the trial will not run again without an explicit resume."""
        return self in _FINISHED_TRIAL_STATES


_FINISHED_TRIAL_STATES = frozenset(
    {
        TrialState.COMPLETED,
        TrialState.PAUSED,
        TrialState.STOPPED,
        TrialState.ERRORED,
        TrialState.CANCELED,
    }
)


class ProjectRole(StrEnum):
    """A member's role in a project; each role may do what the ones before it may."""

    VIEWER = "viewer"
    """Reads the project's experiments, trials, metrics and checkpoints."""
    EDITOR = "editor"
    """Also submits experiments and pauses, activates or kills them."""
    ADMIN = "admin"
    """Also adds, changes and removes the project's members."""

    @property
    def rank(self) -> int:
        return list(ProjectRole).index(self)

    def allows(self, needed: ProjectRole) -> bool:
        """Whether this role may do what `needed` may."""
        return self.rank >= needed.rank


class MetricKind(StrEnum):
    """Which loop reported a metric: training steps or a validation pass."""

    TRAINING = "training"
    VALIDATION = "validation"


class OutcomeState(StrEnum):
    """How a worker ended its trial, in its own words."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    """Stopped by the searcher: final."""
    PAUSED = "paused"
    """Stopped by a signal (Ctrl-C, pause, a cluster's preemption): resumable."""
    ERRORED = "errored"

    def trial_state(self) -> TrialState:
        """The trial state this outcome puts the trial in."""
        return TrialState(self.value.upper())


class DecisionAction(StrEnum):
    """The searcher's (or a pause's) answer to "continue?"."""

    CONTINUE = "continue"
    STOP = "stop"


def _metric_float(value: float | str) -> float:
    """A metric as a float: infinities come as strings (JSON has none), NaN is refused."""
    number = float(value)
    if math.isnan(number):
        raise ValueError(
            "NaN is not a metric value; leave out a metric that is undefined (e.g. an AUC "
            "over one class), and a NaN loss stops the trial (training.on_nonfinite)"
        )
    return number


MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]
MetricValue = Annotated[
    StrictFloat | Literal["inf", "-inf", "Infinity", "-Infinity"],
    AfterValidator(_metric_float),
]
"""A finite number or an infinity (a background rejection with no background passing);
JSON has no infinities, so they travel as the strings "inf" or "Infinity" (and negatives)."""
ReportedValue = Annotated[
    float,
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["Infinity", "-Infinity"]}]}
    ),
]
"""A stored metric as the Master answers it: a number, or an infinity as a string."""
StoredText = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
"""Text the store keeps: no NUL character (PostgreSQL's text columns cannot hold one)."""
TrialId = Annotated[StrictInt, Field(ge=1, le=MAX_INT)]
Batches = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
Epoch = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]


class _Message(BaseModel):
    """Base of every message: unknown fields are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")


# -- worker -> Master ---------------------------------------------------------------------------


class TrialSpec(_Message):
    """What a worker needs to train its trial: the resolved config and where to write."""

    trial_id: TrialId
    experiment_id: TrialId
    trial_number: StrictInt = Field(ge=0)
    attempt: StrictInt = Field(ge=1)
    """1 for the first launch, one more for each retry or resume."""
    config: AnyTrialConfig
    """The built-in loop's resolved config, or a script trial's (`ScriptTrialConfig`)."""
    checkpoint_dir: str
    staging_dir: str
    """Cache root of staged data (the Master's home/cache/staged), shared by all trials."""
    heartbeat_interval_s: StrictFloat = Field(gt=0)


Efficiency = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]


class RocCurve(_Message):
    """A validation's ROC curve, down-sampled (``trainyard.metrics.downsampled_roc``): eps_B
    of the signal class against the rest at each signal efficiency eps_S, both rising."""

    signal_efficiency: list[Efficiency] = Field(min_length=2, max_length=MAX_ROC_POINTS)
    background_efficiency: list[Efficiency] = Field(min_length=2, max_length=MAX_ROC_POINTS)

    @model_validator(mode="after")
    def _paired(self) -> RocCurve:
        if len(self.signal_efficiency) != len(self.background_efficiency):
            raise ValueError(
                f"a ROC curve pairs each signal efficiency with a background efficiency, but "
                f"it has {len(self.signal_efficiency)} and {len(self.background_efficiency)}"
            )
        if any(b < a for a, b in itertools.pairwise(self.signal_efficiency)):
            raise ValueError("a ROC curve's signal efficiencies must not decrease")
        return self


class MetricsReport(_Message):
    """Training metrics at the log period, or validation metrics after a validation."""

    kind: MetricKind
    batches: Batches
    epoch: Epoch
    values: dict[MetricName, MetricValue] = Field(max_length=MAX_METRICS_PER_REPORT)
    roc: RocCurve | None = None
    """With a validation of the built-in loop: its down-sampled ROC curve."""


class CheckpointEntry(_Message):
    """A checkpoint folder that is complete and verified on disk."""

    batches: Batches
    path: StoredText = Field(min_length=1, max_length=4096)
    epoch: Epoch


class CheckpointInventory(_Message):
    """Every checkpoint of the trial on disk, sent after each save and after a resume.

    The Master makes its active checkpoints exactly these: a new one is registered, one the
    worker removed (`checkpoint.keep`, or newer steps of a replaced run) is marked deleted, even
    when an earlier report was lost with a killed Master.
    """

    checkpoints: list[CheckpointEntry] = Field(max_length=1024)


class Heartbeat(_Message):
    """Proof of life from the training loop, with progress for ETAs."""

    batches: Batches
    total_batches: Batches | None = None


class Decision(_Message):
    """The answer to a worker's "continue?" after a validation."""

    action: DecisionAction
    reason: str = ""


class TrialOutcome(_Message):
    """How a worker ended its trial."""

    state: OutcomeState
    message: StoredText | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)


class PackJoinRequest(_Message):
    """`POST /trials/{id}/pack/join`, sent by a packed worker with a place free between steps,
    with the credential of one of its members (`{id}`): give this pack the experiment's next
    queued trial (docs/packing.md, "Joins")."""

    members: list[TrialId] = Field(min_length=1, max_length=64)
    """The trials the pack trains now, the caller among them: the Master checks they are this
    pack's, and re-offers a trial it claimed for the pack whose answer was lost."""


class PackJoinOffer(_Message):
    """The answer to a PackJoinRequest: a trial claimed for the pack (now RUNNING under the
    pack's worker), with its spec and its attempt's own credential; or none, with why."""

    trial_id: TrialId | None = None
    spec: TrialSpec | None = None
    token: str | None = Field(default=None, repr=False)
    """The new member's worker credential (never logged: kept out of the repr)."""
    reason: str = ""
    """Why no trial was offered (none queued, the experiment's concurrency, its state)."""


# -- Master -> clients (read views) --------------------------------------------------------------


class TrialOut(_Message):
    """A trial as clients see it."""

    id: int
    experiment_id: int
    number: int
    state: TrialState
    hyperparameters: dict[str, Any]
    batches_trained: int
    total_batches: int | None
    num_restarts: int
    started_at: datetime | None
    ended_at: datetime | None
    last_heartbeat_at: datetime | None
    worker_key: int | None
    """Its worker as the executor names it: a local pid, a SLURM job id (a pack's members
    share it); None on Kubernetes."""
    log_path: str | None
    error: str | None


class ExperimentOut(_Message):
    """An experiment as clients see it."""

    id: int
    name: str
    project: str = "default"
    """The project whose members may see it (`default` for embedded runs)."""
    owner: str | None = None
    """Who submitted it (their username, else their subject); None for embedded runs."""
    state: ExperimentState
    created_at: datetime
    ended_at: datetime | None
    message: str | None
    num_trials: int


class ExperimentSubmission(_Message):
    """`POST /api/v1/experiments`: an experiment file for a server to check, store and run.

    The client makes relative paths absolute against the file's folder first (the facility's
    file systems are shared), so the server reads what the user meant."""

    yaml: StoredText = Field(min_length=1)
    source: StoredText = Field(min_length=1, max_length=4096)
    """The file's path on the client, to name it in messages."""
    project: StoredText = Field(default="default", min_length=1, max_length=128)
    """The project the experiment belongs to; the caller must be one of its editors."""


class LogChunk(_Message):
    """`GET /api/v1/trials/{id}/log?offset=N`: the worker log from byte `offset` on."""

    text: str
    next_offset: int
    """Ask from here for the lines written since."""
    exists: bool
    """False while the trial has not started (no log yet)."""


class MetricOut(_Message):
    """One reported set of metrics (infinities as the strings "Infinity", "-Infinity")."""

    kind: MetricKind
    batches: int
    epoch: float
    values: dict[str, ReportedValue]
    reported_at: datetime


class CheckpointOut(_Message):
    """A checkpoint the store knows of, newest first in listings."""

    batches: int
    path: str
    epoch: float | None
    created_at: datetime


# -- local executor <-> worker fork server (JSON lines over a pipe, not HTTP) -------------------


class ForkRequest(_Message):
    """Start one trial's one-slot worker as a fork of the warm fork server."""

    trial_id: int
    log_path: str
    env: dict[str, str]
    """The worker's whole environment (the executor's, the trial's credential, its placement)."""


class ForkStarted(_Message):
    """The fork server's answer to a ForkRequest: the worker's process id."""

    kind: Literal["started"] = "started"
    trial_id: int
    pid: int


class ForkExited(_Message):
    """A forked worker ended: its exit status as `Popen.returncode` gives it (-N: signal N)."""

    kind: Literal["exited"] = "exited"
    pid: int
    code: int


ForkReply = Annotated[ForkStarted | ForkExited, Field(discriminator="kind")]


class FieldError(BaseModel):
    """One wrong field of a request: where it is (e.g. `query.kind`) and what is wrong."""

    field: str
    problem: str


class ErrorOut(BaseModel):
    """Every 4xx and 5xx body: `detail` says what was wrong and what to do."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)
    """For a malformed request: one entry per field that was wrong."""
