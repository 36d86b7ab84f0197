"""Dependencies handlers declare in their signatures: the services and who is calling.

Two kinds of caller exist. A user (signed in with the provider's JWT, a personal API token,
or, embedded, the per-run admin token) reaches the experiments of their projects as far as
their role there allows (`trainyard.auth.Access`). A worker credential (one per trial attempt,
see `master.reports`) reaches only its own trial's worker endpoints, and only while the
attempt runs. The bearer token is resolved once per request (FastAPI caches dependencies).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from trainyard.auth import Access, Accounts, Authenticator, Principal, UserPrincipal
from trainyard.auth.authenticator import MISSING_TOKEN
from trainyard.auth.principal import WorkerPrincipal
from trainyard.errors import AuthenticationError, PermissionDeniedError
from trainyard.master.pack_joins import PackJoins
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import MAX_INT, ProjectRole

MAX_TOKEN_CHARS = 8192
"""Room for a provider's JWT (Keycloak's carry roles and groups: a few kB); longer is junk."""

TrialIdPath = Annotated[int, Path(ge=1, le=MAX_INT, description="The trial's id.")]
ExperimentRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="An experiment id, or a name (the newest experiment of that name).",
    ),
]
ProjectNamePath = Annotated[
    str, Path(min_length=1, max_length=64, description="The project's name.")
]


def _service(request: Request) -> MasterService:
    return request.app.state.service


def _reports(request: Request) -> TrialReports:
    return request.app.state.reports


def _pack_joins(request: Request) -> PackJoins:
    return request.app.state.pack_joins


def optional_bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None without the header),
    checked for shape only.

    Raises:
        AuthenticationError: another scheme, or a token that is empty, too long or not
            printable ASCII (such a token was never issued).
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
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


def bearer_token(token: Annotated[str | None, Depends(optional_bearer_token)]) -> str:
    """A bearer token that must be there (the worker endpoints)."""
    if token is None:
        raise AuthenticationError(MISSING_TOKEN)
    return token


def current_principal(
    request: Request, token: Annotated[str | None, Depends(optional_bearer_token)]
) -> Principal:
    """Who is calling; with `auth: none` and no token, the local facility admin."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.resolve(token)


def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> UserPrincipal:
    """A user, not a worker: workers reach only their own trial's worker endpoints."""
    if isinstance(principal, WorkerPrincipal):
        raise PermissionDeniedError(
            f"a worker credential (trial {principal.trial_id}, attempt {principal.attempt}) "
            "reaches only its own trial's worker endpoints (spec, metrics, checkpoints, "
            "heartbeat, decision, outcome, a pack's join); sign in as a user for everything else"
        )
    return principal


def require_facility_admin(user: Annotated[UserPrincipal, Depends(current_user)]) -> UserPrincipal:
    if not user.is_facility_admin:
        raise PermissionDeniedError(
            f"{user.display_name} is not a facility admin; managing projects, shares and "
            "quotas needs one "
            "(the server file's auth.facility_admins lists their subjects)"
        )
    return user


def _access(request: Request) -> Access:
    return request.app.state.access


def _accounts(request: Request) -> Accounts:
    return request.app.state.accounts


CurrentUser = Annotated[UserPrincipal, Depends(current_user)]
FacilityAdmin = Annotated[UserPrincipal, Depends(require_facility_admin)]
AccessDep = Annotated[Access, Depends(_access)]
AccountsDep = Annotated[Accounts, Depends(_accounts)]


def _experiment_for(needed: ProjectRole):
    def dependency(ref: ExperimentRef, user: CurrentUser, access: AccessDep) -> int:
        return access.experiment(user, ref, needed)

    return dependency


def _trial_for(needed: ProjectRole):
    def dependency(trial_id: TrialIdPath, user: CurrentUser, access: AccessDep) -> int:
        return access.trial(user, trial_id, needed)

    return dependency


ViewedExperiment = Annotated[int, Depends(_experiment_for(ProjectRole.VIEWER))]
"""The id of the experiment in the path, for a caller who may read it (viewer or above)."""
EditedExperiment = Annotated[int, Depends(_experiment_for(ProjectRole.EDITOR))]
"""The id of the experiment in the path, for a caller who may control it (editor or above);
for the pause / activate / kill routes."""
ViewedTrial = Annotated[int, Depends(_trial_for(ProjectRole.VIEWER))]


def require_worker(
    trial_id: TrialIdPath,
    token: Annotated[str, Depends(bearer_token)],
    reports: Annotated[TrialReports, Depends(_reports)],
) -> int:
    """The live credential of this trial's current attempt; returns the attempt number."""
    return reports.authenticate(token, trial_id)


ServiceDep = Annotated[MasterService, Depends(_service)]
ReportsDep = Annotated[TrialReports, Depends(_reports)]
PackJoinsDep = Annotated[PackJoins, Depends(_pack_joins)]
WorkerAttempt = Annotated[int, Depends(require_worker)]


def require_admin(_: FacilityAdmin) -> None:
    """The old gate of the admin token's routes, kept for routes that have no project role
    yet: a facility admin (embedded: the per-run admin token). Prefer `EditedExperiment`."""
