"""Who is calling: the typed result of checking a request's bearer token, once per request."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class UserPrincipal(BaseModel):
    """A person (or their script, through a personal API token)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["user"] = "user"
    user_id: int
    issuer: str
    subject: str
    username: str | None
    is_facility_admin: bool
    """Manages projects and members, and acts as an admin of every project."""

    @property
    def display_name(self) -> str:
        return self.username or self.subject


class WorkerPrincipal(BaseModel):
    """The worker of one attempt of one trial; reaches only that trial's worker endpoints."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["worker"] = "worker"
    trial_id: int
    attempt: int


Principal = UserPrincipal | WorkerPrincipal
