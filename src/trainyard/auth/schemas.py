"""Requests and answers of the sign-in, token and project routes, typed once for server and CLI.

Like `trainyard.protocol`, nothing here is a free-form dict; rows of the store are turned into
these before they leave the Master, so a token's hash or a user's issuer never leaks by
accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from trainyard.protocol import ProjectRole

ProjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$"),
]
"""Lower-case letters, digits, `.`, `_`, `-`: it names a folder (<home>/projects/<name>)."""


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthInfo(_Schema):
    """`GET /api/v1/auth/config` (no token needed): how to sign in to this Master.

    `trainyard login` reads it to find the provider and the public client of the device grant.
    """

    mode: Literal["none", "oidc"]
    issuer: str | None = None
    audience: str | None = None
    client_id: str | None = None
    scope: str | None = None
    """What `trainyard login` asks the provider for."""


class MeOut(_Schema):
    """`GET /api/v1/me`: who the Master takes the caller for, and their projects."""

    user_id: int
    subject: str
    username: str | None
    is_facility_admin: bool
    projects: dict[str, ProjectRole]
    """Project name -> the caller's role there."""


class ProjectIn(_Schema):
    name: ProjectName


class ProjectOut(_Schema):
    name: str
    created_at: datetime
    role: ProjectRole | None
    """The caller's role there (None: a facility admin who is not a member)."""


class MemberIn(_Schema):
    """Add a member or change their role; `user` is their subject or username."""

    user: str = Field(min_length=1, max_length=255)
    role: ProjectRole


class MemberOut(_Schema):
    subject: str
    username: str | None
    role: ProjectRole


class TokenRequest(_Schema):
    """`POST /api/v1/tokens`: a name to recognise the token by, and its lifetime."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    lifetime_days: int | None = Field(default=None, ge=1, le=3650)
    """Default: the server's `auth.api_tokens.default_lifetime_days`."""


class TokenOut(_Schema):
    """A token as listings show it: never the secret."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(_Schema):
    """The answer to a token request: the only time the secret is shown."""

    token: str
    info: TokenOut


Limit = Annotated[int, Field(ge=0, le=1_000_000)]
PoolName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ProjectSettings(_Schema):
    """`PATCH /api/v1/admin/projects/{name}` (facility admins): the settings given change, a
    null clears one (the server's default share, priority 0, no limit, every pool)."""

    share: float | None = Field(default=None, gt=0, le=1_000_000)
    """Weight in the fair share of each pool (default: the server file's
    `shares.default_share`)."""
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    """Higher tiers are served first; default 0."""
    max_slots: Limit | None = None
    max_concurrent_trials: Limit | None = None
    user_max_slots: Limit | None = None
    """Per member, in this project."""
    user_max_concurrent_trials: Limit | None = None
    pools: list[PoolName] | None = Field(default=None, max_length=100)
    """The pools its experiments may use; null: every pool."""
    disk_cap_bytes: int | None = Field(default=None, ge=0)
    """New submissions are refused while its checkpoints and logs take this much."""


class PoolUsage(_Schema):
    pool: str
    slot_hours: float
    """Decayed slot-hours as of `updated_at` (the fair share's history)."""
    updated_at: datetime


class ProjectAdminOut(_Schema):
    """A project as facility admins see it: settings, disk use, history, members."""

    name: str
    created_at: datetime
    settings: ProjectSettings
    disk_used_bytes: int
    """Its checkpoints' and logs' bytes, measured at most the server's
    `shares.disk_usage_refresh_s` ago."""
    usage: list[PoolUsage]
    members: list[MemberOut]
