"""Projects, members, personal API tokens and what each user sees, over the shared yard."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from tests.auth.tokens import AUDIENCE, forged
from tests.master.conftest import experiment_config
from tests.master.yard import Yard, yard
from trainyard.config.auth import AuthSpec, OidcSpec
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.store import ApiToken, utcnow

__all__ = ["yard"]


def _names(yard: Yard, caller: str) -> set[str]:
    return {e["name"] for e in yard.call("GET", "/api/v1/experiments", caller).json()}


def test_each_user_lists_only_their_projects_experiments(yard: Yard) -> None:
    assert _names(yard, "viewer") == {"alpha-exp"}
    assert _names(yard, "outsider") == {"beta-exp"}
    assert _names(yard, "facility") >= {"alpha-exp", "beta-exp"}
    assert _names(yard, "guest") == set()


def test_a_name_finds_the_experiment_of_the_callers_project(yard: Yard) -> None:
    """beta's newer experiment of the same name stays invisible to alpha's members."""
    outsider = yard.call("GET", "/api/v1/experiments/beta-exp", "outsider").json()
    assert outsider["project"] == "beta"
    hidden = yard.call("GET", "/api/v1/experiments/beta-exp", "viewer")
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == (
        "no experiment named 'beta-exp'; run `trainyard list` to see experiments"
    )
    missing = yard.call("GET", "/api/v1/experiments/no-such-exp", "viewer")
    assert missing.json()["detail"].replace("no-such-exp", "beta-exp") == hidden.json()["detail"]


def test_another_projects_trial_reads_as_missing(yard: Yard) -> None:
    hidden = yard.call("GET", f"/api/v1/trials/{yard.beta_trial_id}", "viewer")
    assert hidden.status_code == 404
    assert hidden.json()["detail"].startswith(f"no trial with id {yard.beta_trial_id};")


def test_an_unknown_project_gets_a_did_you_mean_over_the_users_projects(yard: Yard) -> None:
    close = yard.call("GET", "/api/v1/projects/alpah/members", "viewer")
    assert close.status_code == 404
    assert close.json()["detail"] == (
        "no project named 'alpah'; did you mean 'alpha'? your projects: alpha"
    )
    # beta exists, but the viewer is not a member: no hint, and no sign that it exists.
    other = yard.call("GET", "/api/v1/projects/beta/members", "viewer").json()["detail"]
    assert other == "no project named 'beta'; your projects: alpha"
    none = yard.call("GET", "/api/v1/projects/alpha/members", "guest").json()["detail"]
    assert "your projects: none yet (a facility admin adds you to a project)" in none


def test_me_names_the_user_and_their_roles(yard: Yard) -> None:
    me = yard.call("GET", "/api/v1/me", "editor").json()
    assert me["subject"] == "sub-editor" and me["username"] == "editor"
    assert me["projects"] == {"alpha": "editor"} and me["is_facility_admin"] is False
    assert yard.call("GET", "/api/v1/me", "facility").json()["is_facility_admin"] is True


def test_members_are_listed_and_managed_by_project_admins(yard: Yard) -> None:
    added = yard.call(
        "PUT", "/api/v1/projects/alpha/members", "admin", {"user": "guest", "role": "editor"}
    )
    assert added.json() == {"subject": "sub-guest", "username": "guest", "role": "editor"}
    members = yard.call("GET", "/api/v1/projects/alpha/members", "viewer").json()
    assert {m["username"]: m["role"] for m in members}["guest"] == "editor"
    assert yard.call("DELETE", "/api/v1/projects/alpha/members/guest", "admin").status_code == 204
    again = yard.call("DELETE", "/api/v1/projects/alpha/members/guest", "admin")
    assert again.status_code == 404
    assert again.json()["detail"].startswith("'guest' is not a member of project 'alpha'")
    nobody = yard.call(
        "PUT", "/api/v1/projects/alpha/members", "admin", {"user": "bob", "role": "viewer"}
    )
    assert nobody.status_code == 404
    assert nobody.json()["detail"].startswith("no user 'bob' has signed in to this Master yet")


def test_project_names_are_unique_and_folder_safe(yard: Yard) -> None:
    taken = yard.call("POST", "/api/v1/projects", "facility", {"name": "alpha"})
    assert taken.status_code == 409
    assert "a project named 'alpha' exists already" in taken.json()["detail"]
    bad = yard.call("POST", "/api/v1/projects", "facility", {"name": "../etc"})
    assert bad.status_code == 422 and "`body.name`" in bad.json()["detail"]


def test_a_projects_experiments_live_in_its_folder(yard: Yard) -> None:
    home = yard.service.settings.resolved_home()
    trial = yard.service.get_trial(yard.trial_id)
    assert trial.log_path is not None
    assert Path(trial.log_path).is_relative_to(home / "projects" / "alpha" / "experiments")


def test_an_api_token_acts_as_its_user_and_is_stored_hashed(yard: Yard) -> None:
    created = yard.call("POST", "/api/v1/tokens", "editor", {"name": "batch jobs"}).json()
    secret = created["token"]
    assert secret.startswith("typat_") and created["info"]["prefix"] == secret[:12]
    as_token = yard.client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert as_token.json()["subject"] == "sub-editor"
    listed = yard.call("GET", "/api/v1/tokens", "editor").text
    assert "batch jobs" in listed and secret not in listed
    with yard.service.store.session() as session:
        stored = session.get_one(ApiToken, created["info"]["id"])
        assert stored.token_sha256 != secret and stored.last_used_at is not None


def test_token_lifetimes_are_bounded_and_expired_tokens_say_when(yard: Yard) -> None:
    too_long = yard.call(
        "POST", "/api/v1/tokens", "editor", {"name": "forever", "lifetime_days": 400}
    )
    assert too_long.status_code == 422
    assert "400 days is over this Master's maximum of 365" in too_long.json()["detail"]
    created = yard.call("POST", "/api/v1/tokens", "editor", {"name": "short"}).json()
    with yard.service.store.session() as session:
        session.get_one(ApiToken, created["info"]["id"]).expires_at = utcnow() - timedelta(days=1)
    expired = yard.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {created['token']}"}
    )
    assert expired.status_code == 401
    assert "API token 'short' (typat_" in expired.json()["detail"]
    assert "expired at" in expired.json()["detail"]
    unknown = yard.client.get("/api/v1/me", headers={"Authorization": "Bearer typat_nonsense"})
    assert "was never issued by this Master" in unknown.json()["detail"]
    other = yard.call("DELETE", f"/api/v1/tokens/{created['info']['id']}", "viewer")
    assert other.status_code == 404
    assert other.json()["detail"].startswith(
        f"you have no API token with id {created['info']['id']}"
    )


def test_auth_none_makes_every_caller_the_local_facility_admin(service: MasterService) -> None:
    open_api = TestClient(create_app(service))
    me = open_api.get("/api/v1/me").json()
    assert me["username"] == "local" and me["is_facility_admin"] is True
    assert open_api.post("/api/v1/projects", json={"name": "lab"}).status_code == 201


def test_the_embedded_admin_token_is_the_local_facility_admin(
    service: MasterService, tmp_path: Path
) -> None:
    """`trainyard run` keeps its per-run token; its experiments stay in `default`."""
    service.create_experiment(experiment_config(tmp_path, "embedded"))
    embedded = TestClient(create_app(service, admin_token="run-token"))
    assert embedded.get("/api/v1/me").status_code == 401
    listed = embedded.get("/api/v1/experiments", headers={"Authorization": "Bearer run-token"})
    assert [(e["name"], e["project"]) for e in listed.json()] == [("embedded", "default")]


def test_an_unreachable_provider_is_a_503_naming_it(service: MasterService) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{closed.getsockname()[1]}"
    auth = AuthSpec(oidc=OidcSpec(issuer=issuer, audience=AUDIENCE))
    api = TestClient(create_app(service, auth=auth))
    answer = api.get("/api/v1/me", headers={"Authorization": f"Bearer {forged(issuer, 'x')}"})
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith(f"the identity provider {issuer} cannot be reached")


def test_a_role_too_low_is_told_which_role_is_needed(yard: Yard) -> None:
    body = {"user": "guest", "role": "viewer"}
    answer = yard.call("PUT", "/api/v1/projects/alpha/members", "viewer", body)
    assert answer.status_code == 403
    assert answer.json()["detail"] == (
        "viewer is a viewer of project 'alpha'; this needs the admin role or above; ask an "
        "admin of 'alpha' (`GET /api/v1/projects/alpha/members` lists them)"
    )
