"""Experiments for the CLI, dashboards and scripts: read them (viewers of the project),
control them (editors), and, on a `trainyard server`, submit them (editors)."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Query, Request, status

from trainyard.config import ExperimentConfig
from trainyard.config.loader import parse_experiment_text
from trainyard.errors import TrainyardError
from trainyard.master.api.deps import (
    AccessDep,
    CurrentUser,
    EditedExperiment,
    ServiceDep,
    ViewedExperiment,
)
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.master.records import TrialRecord, trial_records
from trainyard.protocol import ExperimentOut, ExperimentSubmission, ProjectRole, TrialOut
from trainyard.store import Project

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)


class Submitter(Protocol):
    """What runs submitted experiments: a server's facility loop (master/facility_loop.py)."""

    def submit(
        self, config: ExperimentConfig, *, project: Project, owner_id: int | None
    ) -> ExperimentOut: ...


def _submitter(request: Request) -> Submitter:
    submitter: Submitter | None = request.app.state.submitter
    if submitter is None:
        raise TrainyardError(
            "this Master is a `trainyard run`, which runs its one experiment; submit "
            "experiments to a `trainyard server`"
        )
    return submitter


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


@router.get("/{ref}/records")
def list_records(experiment_id: ViewedExperiment, service: ServiceDep) -> list[TrialRecord]:
    """Each trial with its best validation report and newest checkpoint (`trainyard show`)."""
    return trial_records(service, experiment_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def submit_experiment(
    request: Request, submission: ExperimentSubmission, user: CurrentUser, access: AccessDep
) -> ExperimentOut:
    """Check an experiment file as `trainyard run` does (schema, data paths, model, pool),
    store it in the project (the caller must be its editor) and queue it; a mistake answers
    422 with the message `trainyard run` prints."""
    project = access.project(user, submission.project, ProjectRole.EDITOR)  # before anything else
    submitter = _submitter(request)
    config = parse_experiment_text(submission.yaml, source=submission.source)
    return submitter.submit(config, project=project, owner_id=user.user_id)


@router.post("/{ref}/{action}")
def control_experiment(
    experiment_id: EditedExperiment,
    action: Literal["pause", "activate", "kill"],
    service: ServiceDep,
) -> ExperimentOut:
    """`trainyard pause | activate | kill`: the experiment's runner follows on its next tick;
    409 when the action does not apply to its state."""
    return service.control_experiment(experiment_id, action)
