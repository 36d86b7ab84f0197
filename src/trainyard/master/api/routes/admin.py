"""Facility admins manage projects' shares, quotas, pools and disk caps (`trainyard admin`).

Creating a project and managing its members are the /projects routes (facility admins act
as admins of every project); these add what only a facility admin sees and sets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from trainyard.auth.schemas import ProjectAdminOut, ProjectSettings
from trainyard.master.api.deps import FacilityAdmin, ProjectNamePath
from trainyard.master.api.errors import ERROR_RESPONSES
from trainyard.master.project_admin import ProjectAdmin

router = APIRouter(prefix="/admin/projects", tags=["admin"], responses=ERROR_RESPONSES)


def _admin(request: Request) -> ProjectAdmin:
    return request.app.state.project_admin


ProjectAdminDep = Annotated[ProjectAdmin, Depends(_admin)]


@router.get("")
def list_projects(_: FacilityAdmin, admin: ProjectAdminDep) -> list[ProjectAdminOut]:
    """Every project with its settings, disk use and pool usage."""
    return admin.list()


@router.get("/{name}")
def show_project(
    name: ProjectNamePath,
    _: FacilityAdmin,
    admin: ProjectAdminDep,
    fresh: Annotated[bool, Query(description="Measure the disk use now.")] = False,
) -> ProjectAdminOut:
    """One project's settings, disk use, pool usage and members."""
    return admin.show(name, fresh=fresh)


@router.patch("/{name}")
def set_project(
    name: ProjectNamePath, settings: ProjectSettings, _: FacilityAdmin, admin: ProjectAdminDep
) -> ProjectAdminOut:
    """Change the settings given; a null clears one. Running trials keep their slots: the
    next placement (within a tick) follows the new settings."""
    return admin.update(name, settings)
