"""Read-only views of experiments for the CLI, dashboards and scripts (viewers of the project)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from trainyard.master.api.deps import AccessDep, CurrentUser, ServiceDep, ViewedExperiment
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import ExperimentOut, TrialOut

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)


@router.get("")
def list_experiments(
    service: ServiceDep,
    user: CurrentUser,
    access: AccessDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ExperimentOut]:
    """Newest first; only the experiments of the caller's projects."""
    return service.list_experiments(limit=limit, project_ids=access.visible_project_ids(user))


@router.get("/{ref}")
def get_experiment(experiment_id: ViewedExperiment, service: ServiceDep) -> ExperimentOut:
    """By id, or the newest experiment of that name among the caller's projects."""
    return service.get_experiment(experiment_id)


@router.get("/{ref}/trials")
def list_trials(experiment_id: ViewedExperiment, service: ServiceDep) -> list[TrialOut]:
    """The experiment's trials by number."""
    return service.list_trials(experiment_id)
