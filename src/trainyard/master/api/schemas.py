"""Request and response bodies of the Master's HTTP API; database rows are never returned as is."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrialSpec(BaseModel):
    """What a worker needs to train its trial: the resolved config and where to write."""

    trial_id: int
    experiment_id: int
    trial_number: int
    config: dict[str, Any]
    hyperparameters: dict[str, Any]
    checkpoint_dir: str
    staging_dir: str
    """Cache root of staged data (the Master's home/cache/staged), shared by all trials."""
    heartbeat_interval_s: float


class MetricsReport(BaseModel):
    """Training or validation metrics at a point of training ("inf"/"nan" as strings)."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    kind: Literal["training", "validation"]
    batches: int = Field(ge=0)
    epoch: float = Field(ge=0)
    values: dict[str, float]


class CheckpointReport(BaseModel):
    """A checkpoint the worker has finished writing (it is complete on disk)."""

    batches: int = Field(ge=0)
    path: str
    info: dict[str, Any] = Field(default_factory=dict)


class Heartbeat(BaseModel):
    """Proof of life from the training loop, with progress for ETAs."""

    batches: int = Field(ge=0)
    total_batches: int | None = Field(default=None, ge=0)


class DecisionOut(BaseModel):
    """The searcher's answer after a validation."""

    action: Literal["continue", "stop"]
    reason: str = ""


class TrialOutcome(BaseModel):
    """How a worker ended its trial."""

    state: Literal["completed", "stopped", "paused", "errored"]
    """stopped: by the searcher (final); paused: on a stop signal (resumable)."""
    message: str | None = None


class TrialOut(BaseModel):
    """A trial as clients see it."""

    id: int
    experiment_id: int
    number: int
    state: str
    hyperparameters: dict[str, Any]
    batches_trained: int
    total_batches: int | None
    num_restarts: int
    started_at: datetime | None
    ended_at: datetime | None
    last_heartbeat_at: datetime | None
    worker_pid: int | None
    log_path: str | None
    error: str | None


class ExperimentOut(BaseModel):
    """An experiment as clients see it."""

    id: int
    name: str
    state: str
    created_at: datetime
    ended_at: datetime | None
    message: str | None
    num_trials: int


class MetricOut(BaseModel):
    """One reported set of metrics (non-finite values as the strings "inf", "nan")."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    kind: str
    batches: int
    epoch: float
    values: dict[str, float]
    reported_at: datetime
