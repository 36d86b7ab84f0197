"""The operations behind /me, /tokens and /projects: one function per request, store rows in,
schemas out. Who may call each is checked before (`Access`, the route's dependencies)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from trainyard.auth.access import Access
from trainyard.auth.api_tokens import create_token, revoke_token
from trainyard.auth.principal import UserPrincipal
from trainyard.auth.schemas import (
    MemberIn,
    MemberOut,
    MeOut,
    ProjectIn,
    ProjectOut,
    TokenCreated,
    TokenOut,
    TokenRequest,
)
from trainyard.config.auth import ApiTokenPolicy
from trainyard.errors import NotFoundError, TrainyardError
from trainyard.protocol import ProjectRole
from trainyard.store import ApiToken, Project, Store, User, accounts


class Accounts:
    """Users' tokens and the facility's projects and members."""

    def __init__(self, store: Store, access: Access, policy: ApiTokenPolicy) -> None:
        self._store = store
        self._access = access
        self._policy = policy

    def me(self, user: UserPrincipal) -> MeOut:
        return MeOut(
            user_id=user.user_id,
            subject=user.subject,
            username=user.username,
            is_facility_admin=user.is_facility_admin,
            projects=self._access.roles(user),
        )

    # -- tokens ------------------------------------------------------------------------------

    def create_token(self, user: UserPrincipal, request: TokenRequest) -> TokenCreated:
        with self._store.session() as session:
            row, secret = create_token(
                session,
                user=session.get_one(User, user.user_id),
                request=request,
                policy=self._policy,
            )
            return TokenCreated(token=secret, info=_token_out(row))

    def list_tokens(self, user: UserPrincipal) -> list[TokenOut]:
        with self._store.session() as session:
            return [_token_out(t) for t in accounts.list_api_tokens(session, user_id=user.user_id)]

    def revoke_token(self, user: UserPrincipal, token_id: int) -> TokenOut:
        with self._store.session() as session:
            owner = session.get_one(User, user.user_id)
            return _token_out(revoke_token(session, user=owner, token_id=token_id))

    # -- projects and members ----------------------------------------------------------------

    def list_projects(self, user: UserPrincipal) -> list[ProjectOut]:
        """The user's projects; every project for a facility admin."""
        roles = self._access.roles(user)
        with self._store.session() as session:
            return [
                _project_out(project, roles.get(project.name))
                for project in accounts.list_projects(session)
                if user.is_facility_admin or project.name in roles
            ]

    def create_project(self, request: ProjectIn) -> ProjectOut:
        """Raises TrainyardError (409) when the name is taken."""
        with self._store.session() as session:
            if accounts.find_project(session, request.name) is not None:
                raise TrainyardError(
                    f"a project named {request.name!r} exists already; choose another name"
                )
            return _project_out(accounts.create_project(session, name=request.name), None)

    def members(self, project: Project) -> list[MemberOut]:
        with self._store.session() as session:
            return [
                MemberOut(subject=u.subject, username=u.username, role=role)
                for u, role in accounts.list_members(session, project_id=project.id)
            ]

    def set_member(self, project: Project, member: MemberIn, *, issuer: str) -> MemberOut:
        with self._store.session() as session:
            user = _known_user(session, issuer, member.user)
            accounts.set_membership(
                session, project_id=project.id, user_id=user.id, role=member.role
            )
            return MemberOut(subject=user.subject, username=user.username, role=member.role)

    def remove_member(self, project: Project, name: str, *, issuer: str) -> None:
        with self._store.session() as session:
            user = _known_user(session, issuer, name)
            if not accounts.remove_membership(session, project_id=project.id, user_id=user.id):
                raise NotFoundError(
                    f"{name!r} is not a member of project {project.name!r}; "
                    f"`GET /api/v1/projects/{project.name}/members` lists its members"
                )


def _known_user(session: Session, issuer: str, name: str) -> User:
    user = accounts.find_user_by_name(session, issuer=issuer, name=name)
    if user is None:
        raise NotFoundError(
            f"no user {name!r} has signed in to this Master yet; ask them to sign in once "
            "(`trainyard login`), then add them by username or subject"
        )
    return user


def _project_out(project: Project, role: ProjectRole | None) -> ProjectOut:
    return ProjectOut(name=project.name, created_at=project.created_at, role=role)


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )
