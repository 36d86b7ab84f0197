"""ORM tables for experiments, trials, metrics, checkpoints, credentials, users and projects.

The store is the single source of truth: a restarted Master rebuilds its view from these rows.
Everything here must work on SQLite and PostgreSQL alike, so types are portable (JSON,
timezone-aware UTC datetimes via `UTCDateTime`) and constraint names are fixed by a naming
convention that the migrations repeat verbatim.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Double,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trainyard.protocol import ExperimentState, MetricKind, ProjectRole, TrialState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Named constraints let future (batch) migrations on SQLite address them by name."""

ENUM_LENGTH = 16


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind the store accepts)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite has no time zones, so values are stored there as naive UTC; PostgreSQL gets
    `timestamptz`. Naive datetimes are rejected because their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class MetricValues(TypeDecorator[dict[str, float]]):
    """Metric name -> float as JSON, NaN and infinities included.

    A diverged loss is NaN, which PostgreSQL's JSON rejects; non-finite values are therefore
    stored as the strings "nan", "inf" and "-inf" and come back as floats.
    """

    impl = JSON
    cache_ok = True

    def process_bind_param(
        self, value: dict[str, float] | None, dialect: Dialect
    ) -> dict[str, float | str] | None:
        if value is None:
            return None
        return {name: v if math.isfinite(v) else str(v) for name, v in value.items()}

    def process_result_value(
        self, value: dict[str, float | str] | None, dialect: Dialect
    ) -> dict[str, float] | None:
        if value is None:
            return None
        return {name: float(v) for name, v in value.items()}


class CheckpointState(StrEnum):
    """DELETED rows stay as history after their file was removed (e.g. by a retention policy)."""

    ACTIVE = "ACTIVE"
    DELETED = "DELETED"


def _enum_column(enum_class: type[StrEnum]) -> Enum:
    """A plain VARCHAR of the enum's values: no native enum or CHECK constraint, so adding a
    state later needs no table rebuild on SQLite."""
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=ENUM_LENGTH,
        values_callable=lambda members: [member.value for member in members],
    )


VERSION_TABLE = "ty_alembic_version"
"""Tables are prefixed `ty_` so that Optuna's RDB storage can live in the same database."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Experiment(Base):
    __tablename__ = "ty_experiments"
    # AUTOINCREMENT keeps SQLite from reusing the id of a deleted experiment.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    state: Mapped[ExperimentState] = mapped_column(
        _enum_column(ExperimentState), default=ExperimentState.QUEUED
    )
    config: Mapped[dict[str, Any]]
    home_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    ended_at: Mapped[datetime | None]
    message: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[int] = mapped_column(ForeignKey("ty_projects.id"), index=True)
    """Whose members may see and control it; `default` for embedded runs and old stores."""
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("ty_users.id"))
    """Who submitted it; None for experiments written before users existed."""

    def __repr__(self) -> str:
        return f"Experiment(id={self.id}, name={self.name!r}, state={self.state})"


class Trial(Base):
    __tablename__ = "ty_trials"
    __table_args__ = (
        UniqueConstraint("experiment_id", "number"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("ty_experiments.id", ondelete="CASCADE"))
    number: Mapped[int]
    state: Mapped[TrialState] = mapped_column(
        _enum_column(TrialState), default=TrialState.QUEUED, index=True
    )
    hyperparameters: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    last_heartbeat_at: Mapped[datetime | None]
    batches_trained: Mapped[int] = mapped_column(default=0)
    total_batches: Mapped[int | None]
    """The trial's planned length, known once its worker has loaded the data."""
    num_restarts: Mapped[int] = mapped_column(default=0)
    log_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    """The failure and the tail of the worker log, so it survives a lost log file."""
    worker_key: Mapped[int | None] = mapped_column(BigInteger)
    """Which worker runs the trial, as its executor names it while it runs: the process id
    of a local worker, the batch job id of a SLURM one (None on Kubernetes, and between a
    launch's claim and its start). A pack's members share it: joins, adoption and a restarted
    Master's clean-up find a pack by it (docs/packing.md)."""
    searcher_trial_id: Mapped[int | None]
    """The searcher's own id for this trial (Optuna's trial id), to report back to it."""

    def __repr__(self) -> str:
        return (
            f"Trial(id={self.id}, experiment_id={self.experiment_id}, number={self.number}, "
            f"state={self.state})"
        )


class Metric(Base):
    __tablename__ = "ty_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("ty_trials.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[MetricKind] = mapped_column(_enum_column(MetricKind))
    batches: Mapped[int]
    epoch: Mapped[float] = mapped_column(Double)
    values: Mapped[dict[str, float]] = mapped_column(MetricValues)
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Metric(trial_id={self.trial_id}, kind={self.kind}, batches={self.batches})"


class Checkpoint(Base):
    __tablename__ = "ty_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("ty_trials.id", ondelete="CASCADE"), index=True
    )
    batches: Mapped[int]
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # `metadata` is reserved on declarative classes, hence the Python name `info`.
    info: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    state: Mapped[CheckpointState] = mapped_column(
        _enum_column(CheckpointState), default=CheckpointState.ACTIVE
    )

    def __repr__(self) -> str:
        return f"Checkpoint(id={self.id}, trial_id={self.trial_id}, batches={self.batches})"


class WorkerCredential(Base):
    """The bearer credential of one attempt of one trial, stored only as its SHA-256.

    A worker's token reaches only its own trial's worker endpoints, and only until its attempt
    ends (`revoked_at`); the row stays so a late call can be told which attempt it was.
    """

    __tablename__ = "ty_worker_credentials"
    __table_args__ = (UniqueConstraint("trial_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("ty_trials.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    """1 for a trial's first launch, one more for each retry or resume."""
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"WorkerCredential(trial_id={self.trial_id}, attempt={self.attempt})"


DEFAULT_PROJECT = "default"
"""The project of embedded runs and of every experiment written before projects existed."""


class User(Base):
    """A person, keyed on the identity provider's (issuer, subject), never on a name.

    Created the first time one of their tokens is accepted; `username` and `email` are what the
    provider last said, for display only.
    """

    __tablename__ = "ty_users"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"User(id={self.id}, subject={self.subject!r}, username={self.username!r})"


class Project(Base):
    """A group of people sharing experiments, checkpoints and a share of the slots.

    Unset (None) settings mean the server file's default (share) or no limit (quotas, pools,
    disk cap); facility admins set them with `trainyard admin project set`."""

    __tablename__ = "ty_projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    share: Mapped[float | None] = mapped_column(Double)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_slots: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_trials: Mapped[int | None] = mapped_column(Integer)
    user_max_slots: Mapped[int | None] = mapped_column(Integer)
    """Per member: the most slots one user's experiments of this project hold at once."""
    user_max_concurrent_trials: Mapped[int | None] = mapped_column(Integer)
    pools: Mapped[list[str] | None] = mapped_column(JSON)
    """The pools its experiments may use; None: every pool of the facility."""
    disk_cap_bytes: Mapped[int | None] = mapped_column(BigInteger)

    def __repr__(self) -> str:
        return f"Project(id={self.id}, name={self.name!r})"


class Membership(Base):
    """One user's role in one project."""

    __tablename__ = "ty_memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("ty_projects.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("ty_users.id", ondelete="CASCADE"), index=True)
    role: Mapped[ProjectRole] = mapped_column(_enum_column(ProjectRole))

    def __repr__(self) -> str:
        return f"Membership(project_id={self.project_id}, user_id={self.user_id}, {self.role})"


class ApiToken(Base):
    """A personal API token for scripts and batch jobs, stored only as its SHA-256.

    `prefix` (the first characters of the token) is shown in listings so a user can tell which
    token is which; it is too short to guess the rest from.
    """

    __tablename__ = "ty_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ty_users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id}, user_id={self.user_id}, name={self.name!r})"


class ProjectUsage(Base):
    """A project's past use of one pool: slot-seconds decayed by the server's half-life, the
    history the fair share weighs (Slurm's RawUsage, Kueue's usageHalfLifeTime)."""

    __tablename__ = "ty_project_usage"
    __table_args__ = (UniqueConstraint("project_id", "pool"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("ty_projects.id", ondelete="CASCADE"), index=True
    )
    pool: Mapped[str] = mapped_column(String(64))
    slot_seconds: Mapped[float] = mapped_column(Double, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ValidationRoc(Base):
    """The down-sampled ROC curve of one validation report (``MetricsReport.roc``).

    A table of its own rather than a column of ty_metrics, so reading a thousand trials'
    metrics never loads curves; about 4 kB per validation.
    """

    __tablename__ = "ty_validation_rocs"

    metric_id: Mapped[int] = mapped_column(
        ForeignKey("ty_metrics.id", ondelete="CASCADE"), primary_key=True
    )
    signal_efficiency: Mapped[list[float]] = mapped_column(JSON)
    background_efficiency: Mapped[list[float]] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"ValidationRoc(metric_id={self.metric_id}, points={len(self.signal_efficiency)})"


class ValidationCurve(Base):
    """One trial's curve of one validation metric, thinned and kept current as reports arrive
    (`store.curves`), so the dashboard reads a row per trial instead of every report."""

    __tablename__ = "ty_validation_curves"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("ty_trials.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    stride: Mapped[int]
    count: Mapped[int]
    steps: Mapped[str] = mapped_column(Text)
    values: Mapped[str] = mapped_column(Text)
    """The points as JSON arrays, ready for the page (see `ThinnedCurve`)."""
    max_value: Mapped[float | None] = mapped_column(Double)
    max_step: Mapped[int | None]
    min_value: Mapped[float | None] = mapped_column(Double)
    min_step: Mapped[int | None]

    def __repr__(self) -> str:
        return f"ValidationCurve(trial_id={self.trial_id}, metric={self.metric!r})"
