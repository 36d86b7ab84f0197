"""Read-only views of trials for the CLI, dashboards and scripts (viewers of the project)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query

from trainyard.master.api.deps import ServiceDep, ViewedTrial
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import MAX_INT, CheckpointOut, LogChunk, MetricKind, MetricOut, TrialOut

MAX_LOG_CHUNK_BYTES = 256 * 1024

router = APIRouter(prefix="/trials", tags=["trials"], responses=ERROR_RESPONSES)


@router.get("/{trial_id}")
def get_trial(trial_id: ViewedTrial, service: ServiceDep) -> TrialOut:
    """A trial's state and progress."""
    return service.get_trial(trial_id)


@router.get("/{trial_id}/metrics")
def list_metrics(
    trial_id: ViewedTrial, service: ServiceDep, kind: MetricKind | None = None
) -> list[MetricOut]:
    """Every report of a trial, oldest first; `kind` keeps training or validation ones."""
    return service.trial_metrics(trial_id, kind)


@router.get("/{trial_id}/checkpoints")
def list_checkpoints(trial_id: ViewedTrial, service: ServiceDep) -> list[CheckpointOut]:
    """The trial's checkpoints that exist on disk, newest first."""
    return service.trial_checkpoints(trial_id)


@router.get("/{trial_id}/log")
def read_log(
    trial_id: ViewedTrial,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> LogChunk:
    """The worker log from byte `offset`, at most 256 KiB; `trainyard logs` on a server."""
    log_path = service.get_trial(trial_id).log_path
    if not log_path or not Path(log_path).is_file():
        return LogChunk(text="", next_offset=offset, exists=False)
    with Path(log_path).open("rb") as log:
        log.seek(offset)
        data = log.read(MAX_LOG_CHUNK_BYTES)
    return LogChunk(
        text=data.decode(errors="replace"), next_offset=offset + len(data), exists=True
    )
