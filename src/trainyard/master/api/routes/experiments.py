"""Read-only views of experiments for the CLI, dashboards and scripts (admin token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from trainyard.master.api.deps import ServiceDep
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import ExperimentOut, TrialOut

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)

ExperimentRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="An experiment id, or a name (the newest experiment of that name).",
    ),
]


@router.get("")
def list_experiments(
    service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[ExperimentOut]:
    """Newest first."""
    return service.list_experiments(limit=limit)


@router.get("/{ref}")
def get_experiment(ref: ExperimentRef, service: ServiceDep) -> ExperimentOut:
    """By id, or the newest experiment of that name."""
    return service.get_experiment(ref)


@router.get("/{ref}/trials")
def list_trials(ref: ExperimentRef, service: ServiceDep) -> list[TrialOut]:
    """The experiment's trials by number."""
    return service.list_trials(service.get_experiment(ref).id)
