"""Dependencies handlers declare in their signatures: the services and who is calling.

Two kinds of caller exist. The admin token (one per Master, given to the CLI and to people
who operate it) reaches the read endpoints. A worker credential (one per trial attempt, see
`master.reports`) reaches only its own trial's worker endpoints, and only while the attempt
runs.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Path, Request

from trainyard.errors import AuthenticationError, PermissionDeniedError
from trainyard.master.reports import TrialReports
from trainyard.master.service import WORKER_TOKEN_PREFIX, MasterService
from trainyard.protocol import MAX_INT

MAX_TOKEN_CHARS = 512

TrialIdPath = Annotated[int, Path(ge=1, le=MAX_INT, description="The trial's id.")]


def _service(request: Request) -> MasterService:
    return request.app.state.service


def _reports(request: Request) -> TrialReports:
    return request.app.state.reports


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header, checked for shape only.

    Raises:
        AuthenticationError: no header, another scheme, or a token that is empty, too long
            or not printable ASCII (such a token was never issued).
    """
    header = request.headers.get("authorization")
    if header is None:
        raise AuthenticationError(
            "missing `Authorization: Bearer <token>` header; the CLI's admin token is "
            "TRAINYARD_TOKEN, a worker's credential comes from its executor"
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise AuthenticationError(
            f"the Authorization header uses the {scheme[:20]!r} scheme; send "
            "`Authorization: Bearer <token>`"
        )
    if not token:
        raise AuthenticationError(
            "the bearer token is empty; send `Authorization: Bearer <token>`"
        )
    if len(token) > MAX_TOKEN_CHARS or not (token.isascii() and token.isprintable()):
        raise AuthenticationError(
            "the bearer token must be printable ASCII of at most "
            f"{MAX_TOKEN_CHARS} characters; this one is not, so it was never issued"
        )
    return token


def require_admin(request: Request, token: Annotated[str, Depends(bearer_token)]) -> None:
    """The Master's admin token, compared in constant time."""
    if secrets.compare_digest(token.encode(), request.app.state.admin_token.encode()):
        return
    if token.startswith(WORKER_TOKEN_PREFIX):
        raise PermissionDeniedError(
            "a worker credential reaches only its own trial's worker endpoints "
            "(spec, metrics, checkpoints, heartbeat, decision, outcome); use the admin token"
        )
    raise AuthenticationError("wrong bearer token: this Master's admin token is TRAINYARD_TOKEN")


def require_worker(
    trial_id: TrialIdPath,
    token: Annotated[str, Depends(bearer_token)],
    reports: Annotated[TrialReports, Depends(_reports)],
) -> int:
    """The live credential of this trial's current attempt; returns the attempt number."""
    return reports.authenticate(token, trial_id)


ServiceDep = Annotated[MasterService, Depends(_service)]
ReportsDep = Annotated[TrialReports, Depends(_reports)]
WorkerAttempt = Annotated[int, Depends(require_worker)]
