"""Projects and their members: facility admins create projects, project admins manage members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from trainyard.auth import LOCAL_ISSUER
from trainyard.auth.schemas import MemberIn, MemberOut, ProjectIn, ProjectOut
from trainyard.config.auth import AuthSpec
from trainyard.master.api.deps import (
    AccessDep,
    AccountsDep,
    CurrentUser,
    FacilityAdmin,
    ProjectNamePath,
)
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.protocol import ProjectRole

router = APIRouter(prefix="/projects", tags=["projects"], responses=ERROR_RESPONSES)

MemberPath = Annotated[
    str, Path(min_length=1, max_length=255, description="The member's subject or username.")
]


def _issuer(request: Request) -> str:
    """Members are users of the provider this Master trusts (the local user without one)."""
    auth = request.app.state.authenticator.auth
    return auth.oidc.issuer if isinstance(auth, AuthSpec) else LOCAL_ISSUER


@router.get("")
def list_projects(user: CurrentUser, accounts: AccountsDep) -> list[ProjectOut]:
    """The caller's projects with their role; a facility admin sees every project."""
    return accounts.list_projects(user)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_project(project: ProjectIn, _: FacilityAdmin, accounts: AccountsDep) -> ProjectOut:
    """A new, empty project (facility admins only)."""
    return accounts.create_project(project)


@router.get("/{name}/members")
def list_members(
    name: ProjectNamePath, user: CurrentUser, access: AccessDep, accounts: AccountsDep
) -> list[MemberOut]:
    """The project's members and their roles (any member may look)."""
    return accounts.members(access.project(user, name, ProjectRole.VIEWER))


@router.put("/{name}/members")
def set_member(
    name: ProjectNamePath,
    member: MemberIn,
    user: CurrentUser,
    access: AccessDep,
    accounts: AccountsDep,
    request: Request,
) -> MemberOut:
    """Add a user who has signed in once, or change their role (project admins)."""
    project = access.project(user, name, ProjectRole.ADMIN)
    return accounts.set_member(project, member, issuer=_issuer(request))


@router.delete("/{name}/members/{member}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    name: ProjectNamePath,
    member: MemberPath,
    user: CurrentUser,
    access: AccessDep,
    accounts: AccountsDep,
    request: Request,
) -> None:
    """Remove a member (project admins); their experiments stay in the project."""
    project = access.project(user, name, ProjectRole.ADMIN)
    accounts.remove_member(project, member, issuer=_issuer(request))
