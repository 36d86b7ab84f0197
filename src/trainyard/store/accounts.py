"""Reading and writing users, projects, memberships and personal API tokens.

Like `repository`, every function takes the caller's `Session` and never commits. Who may call
which function is decided above, in `trainyard.auth`; these only keep the rows consistent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.protocol import ProjectRole
from trainyard.store.models import ApiToken, Membership, Project, User, utcnow

LAST_SEEN_RESOLUTION = timedelta(minutes=1)

# --- users -------------------------------------------------------------------------------------


def find_user(session: Session, *, issuer: str, subject: str) -> User | None:
    query = select(User).where(User.issuer == issuer, User.subject == subject)
    return session.scalars(query).first()


def sign_in_user(
    session: Session,
    *,
    issuer: str,
    subject: str,
    username: str | None = None,
    email: str | None = None,
) -> User:
    """The user of (issuer, subject), created on first sight; name, email and last-seen
    time are refreshed from what the provider says now."""
    user = find_user(session, issuer=issuer, subject=subject)
    if user is None:
        user = User(issuer=issuer, subject=subject, created_at=utcnow())
        session.add(user)
    user.username = username if username is not None else user.username
    user.email = email if email is not None else user.email
    now = utcnow()
    # Once a minute is enough for "last seen"; a write per request would serialise requests.
    if user.last_seen_at is None or now - user.last_seen_at > LAST_SEEN_RESOLUTION:
        user.last_seen_at = now
    session.flush()
    return user


# --- projects and members ----------------------------------------------------------------------


def find_project(session: Session, name: str) -> Project | None:
    return session.scalars(select(Project).where(Project.name == name)).first()


def create_project(session: Session, *, name: str) -> Project:
    project = Project(name=name, created_at=utcnow())
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))


def roles_of_user(session: Session, *, user_id: int) -> dict[int, ProjectRole]:
    """Project id -> the user's role there, for every project the user belongs to."""
    query = select(Membership.project_id, Membership.role).where(Membership.user_id == user_id)
    return {project_id: role for project_id, role in session.execute(query)}


def role_in_project(session: Session, *, project_id: int, user_id: int) -> ProjectRole | None:
    query = select(Membership.role).where(
        Membership.project_id == project_id, Membership.user_id == user_id
    )
    return session.scalars(query).first()


def set_membership(
    session: Session, *, project_id: int, user_id: int, role: ProjectRole
) -> Membership:
    """Add the user to the project with `role`, or change the role they have."""
    query = select(Membership).where(
        Membership.project_id == project_id, Membership.user_id == user_id
    )
    membership = session.scalars(query).first()
    if membership is None:
        membership = Membership(project_id=project_id, user_id=user_id, role=role)
        session.add(membership)
    membership.role = role
    session.flush()
    return membership


def remove_membership(session: Session, *, project_id: int, user_id: int) -> bool:
    """Whether the user was a member (and is no longer)."""
    query = select(Membership).where(
        Membership.project_id == project_id, Membership.user_id == user_id
    )
    membership = session.scalars(query).first()
    if membership is None:
        return False
    session.delete(membership)
    session.flush()
    return True


def list_members(session: Session, *, project_id: int) -> list[tuple[User, ProjectRole]]:
    query = (
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project_id)
        .order_by(User.username, User.subject)
    )
    return [(user, role) for user, role in session.execute(query)]


def find_user_by_name(session: Session, *, issuer: str, name: str) -> User | None:
    """A user of `issuer` whose subject or username is `name` (subject first)."""
    found = find_user(session, issuer=issuer, subject=name)
    if found is not None:
        return found
    query = select(User).where(User.issuer == issuer, User.username == name)
    return session.scalars(query.order_by(User.id)).first()


# --- personal API tokens -----------------------------------------------------------------------


def add_api_token(
    session: Session,
    *,
    user_id: int,
    name: str,
    token_sha256: str,
    prefix: str,
    expires_at: datetime,
) -> ApiToken:
    token = ApiToken(
        user_id=user_id,
        name=name,
        token_sha256=token_sha256,
        prefix=prefix,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token


def find_api_token(session: Session, *, token_sha256: str) -> ApiToken | None:
    return session.scalars(select(ApiToken).where(ApiToken.token_sha256 == token_sha256)).first()


def list_api_tokens(session: Session, *, user_id: int) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
    return list(session.scalars(query))


def get_api_token(session: Session, *, user_id: int, token_id: int) -> ApiToken | None:
    """The user's token `token_id`; None also when it is someone else's."""
    token = session.get(ApiToken, token_id)
    return token if token is not None and token.user_id == user_id else None
