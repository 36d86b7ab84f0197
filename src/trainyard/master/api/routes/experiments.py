"""Read-only views of experiments for the CLI, dashboards and scripts."""

from __future__ import annotations

from fastapi import APIRouter

from trainyard.master.api.deps import ServiceDep
from trainyard.master.api.schemas import ExperimentOut, TrialOut

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.get("")
def list_experiments(service: ServiceDep, limit: int = 100) -> list[ExperimentOut]:
    """Newest first."""
    return service.list_experiments(limit=limit)


@router.get("/{ref}")
def get_experiment(ref: str, service: ServiceDep) -> ExperimentOut:
    """By id, or the newest experiment of that name."""
    return service.get_experiment(ref)


@router.get("/{ref}/trials")
def list_trials(ref: str, service: ServiceDep) -> list[TrialOut]:
    """The experiment's trials by number."""
    return service.list_trials(service.get_experiment(ref).id)
