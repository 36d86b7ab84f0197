"""Who may do what: a user's role in the project of the experiment, trial or project they name.

Every lookup a user makes goes through here. Experiments and trials of projects the user does
not belong to are reported exactly as missing ones (same status, same message), so nobody
learns another project's experiment names. A member whose role is too low for the action gets
a 403 naming their role and the role needed. Facility admins act as admins of every project.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from trainyard.auth.principal import UserPrincipal
from trainyard.errors import NotFoundError, PermissionDeniedError
from trainyard.protocol import ProjectRole
from trainyard.store import Experiment, Project, Store, accounts, repository
from trainyard.suggest import did_you_mean


class Access:
    """Role checks over one store; one per Master."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def visible_project_ids(self, user: UserPrincipal) -> set[int] | None:
        """The projects whose experiments the user may read; None means every project."""
        with self._store.session() as session:
            return self._visible(session, user)

    def roles(self, user: UserPrincipal) -> dict[str, ProjectRole]:
        """Project name -> the user's role there (a facility admin's own memberships only)."""
        with self._store.session() as session:
            roles = accounts.roles_of_user(session, user_id=user.user_id)
            return {
                project.name: roles[project.id]
                for project in accounts.list_projects(session)
                if project.id in roles
            }

    def experiment(self, user: UserPrincipal, ref: int | str, needed: ProjectRole) -> int:
        """The id of the experiment `ref` names, once the user's role allows `needed`.

        Raises:
            NotFoundError: no such experiment among the projects the user belongs to.
            PermissionDeniedError: the user's role in its project is below `needed`.
        """
        with self._store.session() as session:
            visible = self._visible(session, user)
            experiment = repository.get_experiment(session, ref, project_ids=visible)
            self._check(session, user, experiment.project_id, needed)
            return experiment.id

    def trial(self, user: UserPrincipal, trial_id: int, needed: ProjectRole) -> int:
        """`trial_id`, once the user's role in its experiment's project allows `needed`."""
        with self._store.session() as session:
            visible = self._visible(session, user)
            trial = repository.get_trial(session, trial_id, project_ids=visible)
            experiment = session.get_one(Experiment, trial.experiment_id)
            self._check(session, user, experiment.project_id, needed)
            return trial.id

    def project(self, user: UserPrincipal, name: str, needed: ProjectRole) -> Project:
        """The project `name`, once the user's role there allows `needed`.

        Raises:
            NotFoundError: no such project among the user's (with a did-you-mean over them).
            PermissionDeniedError: the user's role there is below `needed`.
        """
        with self._store.session() as session:
            project = accounts.find_project(session, name)
            visible = self._visible(session, user)
            if project is None or (visible is not None and project.id not in visible):
                raise NotFoundError(_unknown_project_message(session, user, name, visible))
            self._check(session, user, project.id, needed)
            return project

    def _visible(self, session: Session, user: UserPrincipal) -> set[int] | None:
        if user.is_facility_admin:
            return None
        return set(accounts.roles_of_user(session, user_id=user.user_id))

    def _check(
        self, session: Session, user: UserPrincipal, project_id: int, needed: ProjectRole
    ) -> None:
        if user.is_facility_admin:
            return
        role = accounts.role_in_project(session, project_id=project_id, user_id=user.user_id)
        if role is not None and role.allows(needed):
            return
        project = session.get_one(Project, project_id)
        raise PermissionDeniedError(
            f"{user.display_name} is {_article(role)} of project {project.name!r}; this needs "
            f"the {needed.value} role or above; ask an admin of {project.name!r} "
            f"(`GET /api/v1/projects/{project.name}/members` lists them)"
        )


def _unknown_project_message(
    session: Session, user: UserPrincipal, name: str, visible: set[int] | None
) -> str:
    known = [p.name for p in accounts.list_projects(session) if visible is None or p.id in visible]
    hint = did_you_mean(name, known)
    mine = ", ".join(known) if known else "none yet (a facility admin adds you to a project)"
    return f"no project named {name!r}; {hint}your projects: {mine}"


def _article(role: ProjectRole | None) -> str:
    if role is None:
        return "not a member"
    return f"an {role.value}" if role.value[0] in "aeiou" else f"a {role.value}"
