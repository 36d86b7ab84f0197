"""The operations behind /admin/projects: facility admins read and set projects' shares,
quotas, pools and disk caps. Callers are checked before (the routes' `FacilityAdmin`)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from trainyard.auth.schemas import MemberOut, PoolUsage, ProjectAdminOut, ProjectSettings
from trainyard.errors import ConfigError, NotFoundError
from trainyard.master.project_disk import ProjectDisk
from trainyard.store import Project, Store, accounts
from trainyard.store import shares as share_rows
from trainyard.suggest import did_you_mean


class ProjectAdmin:
    """Projects' settings over one store; `pools`: the facility's pool names when known (a
    server), to refuse a misspelt one."""

    def __init__(
        self, store: Store, disk: ProjectDisk, pools: Collection[str] | None = None
    ) -> None:
        self._store = store
        self._disk = disk
        self._pools = pools

    def list(self) -> list[ProjectAdminOut]:
        with self._store.session() as session:
            names = [p.name for p in accounts.list_projects(session)]
        return [self.show(name) for name in names]

    def show(self, name: str, *, fresh: bool = False) -> ProjectAdminOut:
        """Raises NotFoundError (with a did-you-mean over every project)."""
        with self._store.session() as session:
            project = self._find(session, name)
            members = [
                MemberOut(subject=u.subject, username=u.username, role=role)
                for u, role in accounts.list_members(session, project_id=project.id)
            ]
            usage = [
                PoolUsage(pool=pool, slot_hours=row.slot_seconds / 3600, updated_at=row.updated_at)
                for pool, row in share_rows.project_usage(session, project.id).items()
            ]
            out = {"name": project.name, "created_at": project.created_at}
            settings = ProjectSettings.model_validate(
                {field: getattr(project, field) for field in share_rows.SETTINGS}
            )
        return ProjectAdminOut(
            **out,
            settings=settings,
            disk_used_bytes=self._disk.bytes_used(name, fresh=fresh),
            usage=usage,
            members=members,
        )

    def update(self, name: str, settings: ProjectSettings) -> ProjectAdminOut:
        """Set the settings the request gave (null clears one).

        Raises:
            NotFoundError: no such project.
            ConfigError: a pool the facility does not have (with a did-you-mean).
        """
        changes = {field: getattr(settings, field) for field in settings.model_fields_set}
        if changes.get("priority", 0) is None:
            changes["priority"] = 0
        if changes.get("pools") is not None and self._pools is not None:
            problems = [
                f"`pools`: no pool {pool!r} in the facility; "
                f"{did_you_mean(pool, list(self._pools))}pools: {', '.join(sorted(self._pools))}"
                for pool in changes["pools"]
                if pool not in self._pools
            ]
            if problems:
                raise ConfigError(problems, source=f"settings of project {name!r}")
        with self._store.session() as session:
            share_rows.update_project(session, self._find(session, name), changes)
        return self.show(name)

    def _find(self, session: Session, name: str) -> Project:
        project = accounts.find_project(session, name)
        if project is None:
            known = [p.name for p in accounts.list_projects(session)]
            raise NotFoundError(
                f"no project named {name!r}; {did_you_mean(name, known)}projects: "
                f"{', '.join(known) or 'none'} (`trainyard admin project create NAME` adds one)"
            )
        return project
