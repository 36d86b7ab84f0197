"""Endpoints a worker calls during its trial, with its attempt's credential only."""

from __future__ import annotations

from fastapi import APIRouter, status

from trainyard.master.api.deps import PackJoinsDep, ReportsDep, TrialIdPath, WorkerAttempt
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import (
    CheckpointInventory,
    Decision,
    Heartbeat,
    MetricsReport,
    PackJoinOffer,
    PackJoinRequest,
    TrialOutcome,
    TrialSpec,
)

router = APIRouter(prefix="/trials/{trial_id}", tags=["worker"], responses=ERROR_RESPONSES)


@router.get("/spec")
def get_trial_spec(
    trial_id: TrialIdPath, attempt: WorkerAttempt, reports: ReportsDep
) -> TrialSpec:
    """The resolved config, checkpoint folder and staging cache of the trial."""
    return reports.trial_spec(trial_id, attempt=attempt)


@router.post("/metrics", status_code=status.HTTP_204_NO_CONTENT)
def report_metrics(
    trial_id: TrialIdPath, report: MetricsReport, _: WorkerAttempt, reports: ReportsDep
) -> None:
    """Training metrics at the log period, validation metrics after each validation."""
    reports.report_metrics(trial_id, report)


@router.put("/checkpoints", status_code=status.HTTP_204_NO_CONTENT)
def sync_checkpoints(
    trial_id: TrialIdPath, inventory: CheckpointInventory, _: WorkerAttempt, reports: ReportsDep
) -> None:
    """Every checkpoint folder on disk; the store's active checkpoints become exactly these."""
    reports.sync_checkpoints(trial_id, inventory)


@router.post("/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
def heartbeat(
    trial_id: TrialIdPath, beat: Heartbeat, _: WorkerAttempt, reports: ReportsDep
) -> None:
    """Proof of life from the training loop."""
    reports.heartbeat(trial_id, beat)


@router.get("/decision")
def decision(trial_id: TrialIdPath, _: WorkerAttempt, reports: ReportsDep) -> Decision:
    """Continue or stop, asked after each validation."""
    return reports.decide(trial_id)


@router.post("/outcome", status_code=status.HTTP_204_NO_CONTENT)
def report_outcome(
    trial_id: TrialIdPath, outcome: TrialOutcome, _: WorkerAttempt, reports: ReportsDep
) -> None:
    """The worker's final word: completed, stopped, paused or errored; ends the attempt."""
    reports.finish_trial(trial_id, outcome)


@router.post("/pack/join")
def join_pack(
    trial_id: TrialIdPath, request: PackJoinRequest, _: WorkerAttempt, joins: PackJoinsDep
) -> PackJoinOffer:
    """A packed worker with a free place, calling with one member's credential: the
    experiment's next queued trial, claimed for this pack, with its spec and credential; or
    none, with why (docs/packing.md, "Joins")."""
    return joins.claim(trial_id, request)
