"""Every route of the Master against every kind of caller, with a real OIDC provider process.

`ROUTES` has one row per route and the role it needs; `test_every_route_has_a_row` walks the
app's routes, so a route added without a row fails. Each (route, caller) pair is then called
and must answer what the role rules say, with the message that says why.

The callers and their projects are described in tests/master/yard.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
from starlette.routing import BaseRoute

from tests.master.yard import BAD_TOKENS, CALLERS, MEMBERS, WORKER_ROUTE_REFUSAL, Yard, yard
from trainyard.protocol import ProjectRole
from trainyard.store import accounts

__all__ = ["yard"]  # the module-scoped fixture, shared with the other sign-in tests


class Level(Enum):
    PUBLIC = "anyone, no token"
    USER = "any signed-in user"
    VIEWER = "viewer of the project"
    EDITOR = "editor of the project"
    ADMIN = "admin of the project"
    FACILITY = "facility admin"
    WORKER = "that trial's worker"


@dataclass(frozen=True)
class Row:
    level: Level
    body: dict[str, Any] | None = None
    allowed: tuple[int, str] = (200, "")
    """What an allowed caller gets: a success, or (on this Master, which runs no loop and whose
    experiment is RUNNING) the state's refusal, which proves the role check let it through."""


ROUTES: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row(Level.PUBLIC),
    ("GET", "/openapi.json"): Row(Level.PUBLIC),
    ("GET", "/docs"): Row(Level.PUBLIC),
    ("GET", "/docs/oauth2-redirect"): Row(Level.PUBLIC),
    ("GET", "/redoc"): Row(Level.PUBLIC),
    ("GET", "/api/v1/trials/{trial_id}/spec"): Row(Level.WORKER),
    ("POST", "/api/v1/trials/{trial_id}/metrics"): Row(
        Level.WORKER, {"kind": "training", "batches": 1, "epoch": 0.1, "values": {"loss": 1.0}}
    ),
    ("PUT", "/api/v1/trials/{trial_id}/checkpoints"): Row(Level.WORKER, {"checkpoints": []}),
    ("POST", "/api/v1/trials/{trial_id}/heartbeat"): Row(Level.WORKER, {"batches": 1}),
    ("GET", "/api/v1/trials/{trial_id}/decision"): Row(Level.WORKER),
    ("POST", "/api/v1/trials/{trial_id}/outcome"): Row(Level.WORKER, {"state": "completed"}),
    ("POST", "/api/v1/trials/{trial_id}/pack/join"): Row(
        Level.WORKER, {"members": [1]}, allowed=(403, "does not pack trials")
    ),
    ("GET", "/api/v1/trials/{trial_id}"): Row(Level.VIEWER),
    ("GET", "/api/v1/trials/{trial_id}/metrics"): Row(Level.VIEWER),
    ("GET", "/api/v1/trials/{trial_id}/checkpoints"): Row(Level.VIEWER),
    ("GET", "/api/v1/experiments"): Row(Level.USER),
    ("GET", "/api/v1/experiments/{ref}"): Row(Level.VIEWER),
    ("GET", "/api/v1/experiments/{ref}/trials"): Row(Level.VIEWER),
    ("GET", "/api/v1/experiments/{ref}/records"): Row(Level.VIEWER),
    ("GET", "/api/v1/trials/{trial_id}/log"): Row(Level.VIEWER),
    ("POST", "/api/v1/experiments"): Row(
        Level.EDITOR,
        {"yaml": "name: x", "source": "x.yaml", "project": "alpha"},
        allowed=(409, "this Master is a `trainyard run`, which runs its one experiment"),
    ),
    ("POST", "/api/v1/experiments/{ref}/{action}"): Row(
        Level.EDITOR, allowed=(409, "only a PAUSED experiment can be activated")
    ),
    ("GET", "/api/v1/auth/config"): Row(Level.PUBLIC),
    ("GET", "/api/v1/me"): Row(Level.USER),
    ("GET", "/api/v1/tokens"): Row(Level.USER),
    ("POST", "/api/v1/tokens"): Row(Level.USER, {"name": "ci"}),
    ("DELETE", "/api/v1/tokens/{token_id}"): Row(Level.USER),
    ("GET", "/api/v1/projects"): Row(Level.USER),
    ("POST", "/api/v1/projects"): Row(Level.FACILITY, {"name": "new"}),
    ("GET", "/api/v1/projects/{name}/members"): Row(Level.VIEWER),
    ("PUT", "/api/v1/projects/{name}/members"): Row(
        Level.ADMIN, {"user": "sub-guest", "role": "viewer"}
    ),
    ("DELETE", "/api/v1/projects/{name}/members/{member}"): Row(Level.ADMIN),
    ("GET", "/api/v1/admin/projects"): Row(Level.FACILITY),
    ("GET", "/api/v1/admin/projects/{name}"): Row(Level.FACILITY),
    ("PATCH", "/api/v1/admin/projects/{name}"): Row(Level.FACILITY, {"priority": 0}),
}


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, through included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                yield method, prefix + route.path  # type: ignore[attr-defined]


def test_every_route_has_a_row(yard: Yard) -> None:
    assert sorted(_walk(yard.app.routes)) == sorted(ROUTES)


def _expected(row: Row, caller: str, yard: Yard) -> tuple[int, str]:
    """The status the rules give (200 for any success) and a part of the message."""
    level = row.level
    if level is Level.PUBLIC:
        return row.allowed
    if level is Level.WORKER:
        if caller == "none":
            return 401, "missing `Authorization: Bearer <token>` header"
        if caller == "other_worker":
            return 403, f"belongs to trial {yard.beta_trial_id}"
        return 401, WORKER_ROUTE_REFUSAL
    refusals = {
        "none": (401, "missing `Authorization: Bearer <token>` header"),
        "forged": (401, "signature does not match the provider's keys"),
        "revoked": (401, "API token 'old' (typat_"),
        "other_worker": (403, "reaches only its own trial's worker endpoints"),
        **{caller: (401, message) for caller, (_, message) in BAD_TOKENS.items()},
    }
    if caller in refusals:
        return refusals[caller]
    if level is Level.FACILITY and caller != "facility":
        return 403, f"{caller} is not a facility admin"
    if caller == "outsider" and level in (Level.VIEWER, Level.EDITOR, Level.ADMIN):
        return 404, "no "  # exactly as if it did not exist: see the next test
    if level is Level.ADMIN and caller in ("viewer", "editor"):
        return 403, f"{caller} is a{'n' if caller == 'editor' else ''} {caller} of project 'alpha'"
    if level is Level.EDITOR and caller == "viewer":
        return 403, "viewer is a viewer of project 'alpha'"
    return row.allowed


def _path(yard: Yard, method: str, template: str, caller: str) -> str:
    path = template.format(
        trial_id=yard.trial_id,
        ref=yard.experiment_id,
        name="alpha",
        member="sub-guest",
        token_id=1,
        action="activate",
    )
    if template.endswith("{token_id}") and caller in ("outsider", "facility", *MEMBERS):
        own = yard.call("POST", "/api/v1/tokens", caller, {"name": "to-revoke"}).json()
        path = f"/api/v1/tokens/{own['info']['id']}"
    if template.endswith("{member}"):
        with yard.service.store.session() as session:
            guest = accounts.find_user(session, issuer=yard.issuer, subject="sub-guest")
            assert guest is not None
            accounts.set_membership(
                session, project_id=yard.alpha.id, user_id=guest.id, role=ProjectRole.VIEWER
            )
    return path


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "template"), list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_each_route_answers_each_caller_by_the_rules(
    yard: Yard, method: str, template: str, caller: str
) -> None:
    row = ROUTES[(method, template)]
    body = row.body
    if template == "/api/v1/projects" and method == "POST":
        body = {"name": f"p-{uuid.uuid4().hex[:8]}"}
    response = yard.call(method, _path(yard, method, template, caller), caller, body)
    status, message = _expected(row, caller, yard)
    if status == 200:
        assert response.is_success, (response.status_code, response.text)
    else:
        assert response.status_code == status, response.text
        assert message in response.json()["detail"]
