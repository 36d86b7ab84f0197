"""Read-only views of trials for the CLI, dashboards and scripts (viewers of the project)."""

from __future__ import annotations

from fastapi import APIRouter

from trainyard.master.api.deps import ServiceDep, ViewedTrial
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import CheckpointOut, MetricKind, MetricOut, TrialOut

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
