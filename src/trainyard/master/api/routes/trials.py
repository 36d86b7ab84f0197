"""Endpoints a worker calls during its trial: spec, metrics, checkpoints, heartbeat, decision."""

from __future__ import annotations

from fastapi import APIRouter, status

from trainyard.master.api.deps import ServiceDep
from trainyard.master.api.schemas import (
    CheckpointReport,
    DecisionOut,
    Heartbeat,
    MetricOut,
    MetricsReport,
    TrialOut,
    TrialOutcome,
    TrialSpec,
)

router = APIRouter(prefix="/trials", tags=["trials"])


@router.get("/{trial_id}")
def get_trial(trial_id: int, service: ServiceDep) -> TrialOut:
    """A trial's state and progress."""
    return service.get_trial(trial_id)


@router.get("/{trial_id}/spec")
def get_trial_spec(trial_id: int, service: ServiceDep) -> TrialSpec:
    """The resolved config, hyperparameters and checkpoint folder of a trial."""
    return service.trial_spec(trial_id)


@router.post("/{trial_id}/metrics", status_code=status.HTTP_204_NO_CONTENT)
def report_metrics(trial_id: int, report: MetricsReport, service: ServiceDep) -> None:
    """Training metrics at the log period, validation metrics after each validation."""
    service.report_metrics(trial_id, report)


@router.get("/{trial_id}/metrics")
def list_metrics(trial_id: int, service: ServiceDep, kind: str | None = None) -> list[MetricOut]:
    """Every report of a trial, oldest first."""
    return service.trial_metrics(trial_id, kind)


@router.post("/{trial_id}/checkpoints", status_code=status.HTTP_204_NO_CONTENT)
def register_checkpoint(trial_id: int, report: CheckpointReport, service: ServiceDep) -> None:
    """A checkpoint that is complete on disk."""
    service.register_checkpoint(trial_id, report)


@router.post("/{trial_id}/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
def heartbeat(trial_id: int, beat: Heartbeat, service: ServiceDep) -> None:
    """Proof of life from the training loop."""
    service.heartbeat(trial_id, beat)


@router.get("/{trial_id}/decision")
def decision(trial_id: int, service: ServiceDep) -> DecisionOut:
    """Continue or stop, asked after each validation."""
    return service.decide(trial_id)


@router.post("/{trial_id}/outcome", status_code=status.HTTP_204_NO_CONTENT)
def report_outcome(trial_id: int, outcome: TrialOutcome, service: ServiceDep) -> None:
    """The worker's final status: completed, stopped (resumable) or errored."""
    service.finish_trial(trial_id, outcome)
