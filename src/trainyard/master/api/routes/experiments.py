"""Experiments for the CLI, dashboards and scripts (admin token): read them, control them,
and, on a `trainyard server`, submit them."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, status

from trainyard.config import ExperimentConfig
from trainyard.config.loader import parse_experiment_text
from trainyard.errors import TrainyardError
from trainyard.master.api.deps import ServiceDep
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.master.records import TrialRecord, trial_records
from trainyard.protocol import ExperimentOut, ExperimentSubmission, TrialOut

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)


class Submitter(Protocol):
    """What runs submitted experiments: a server's facility loop (master/facility_loop.py)."""

    def submit(self, config: ExperimentConfig) -> ExperimentOut: ...


def _submitter(request: Request) -> Submitter:
    submitter: Submitter | None = request.app.state.submitter
    if submitter is None:
        raise TrainyardError(
            "this Master is a `trainyard run`, which runs its one experiment; submit "
            "experiments to a `trainyard server`"
        )
    return submitter


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


@router.get("/{ref}/records")
def list_records(ref: ExperimentRef, service: ServiceDep) -> list[TrialRecord]:
    """Each trial with its best validation report and newest checkpoint (`trainyard show`)."""
    return trial_records(service, service.get_experiment(ref).id)


@router.post("", status_code=status.HTTP_201_CREATED)
def submit_experiment(
    submission: ExperimentSubmission, submitter: Annotated[Submitter, Depends(_submitter)]
) -> ExperimentOut:
    """Check an experiment file as `trainyard run` does (schema, data paths, model, pool),
    store it and queue it; a mistake answers 422 with the message `trainyard run` prints."""
    config = parse_experiment_text(submission.yaml, source=submission.source)
    return submitter.submit(config)


@router.post("/{ref}/{action}")
def control_experiment(
    ref: ExperimentRef, action: Literal["pause", "activate", "kill"], service: ServiceDep
) -> ExperimentOut:
    """`trainyard pause | activate | kill`: the experiment's runner follows on its next tick;
    409 when the action does not apply to its state."""
    return service.control_experiment(ref, action)
