"""A shared Master with sign-in for the authorisation tests, built once per test module.

Projects `alpha` (viewer, editor and admin members) and `beta` (the outsider is its editor),
an experiment with a running trial in each, a facility admin, a revoked API token, and the
worker credential of beta's trial (a worker of another trial, for alpha's routes). Tokens
come from a real provider process (`oidc_issuer`); the store is SQLite (the per-backend
behaviour of the store is tested in tests/store).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.auth.tokens import AUDIENCE, forged, mint
from tests.master.conftest import experiment_config
from trainyard.config.auth import AuthSpec, OidcSpec
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, ProjectRole, TrialState
from trainyard.settings import Settings
from trainyard.store import Project, accounts, open_store

MEMBERS = {"viewer": ProjectRole.VIEWER, "editor": ProjectRole.EDITOR, "admin": ProjectRole.ADMIN}
BAD_TOKENS = {
    "expired": ({"exp_in": -3600}, "the token expired at"),
    "audience": ({"aud": "grafana"}, "audience 'grafana' is not 'trainyard'"),
    "issuer": ({"iss": "https://evil.example"}, "issuer 'https://evil.example' is not"),
}
CALLERS = [
    "none",
    "forged",
    *BAD_TOKENS,
    "revoked",
    "other_worker",
    "outsider",
    *MEMBERS,
    "facility",
]
WORKER_ROUTE_REFUSAL = "credential of the trial's running attempt"


@dataclass
class Yard:
    app: FastAPI
    client: TestClient
    service: MasterService
    issuer: str
    tokens: dict[str, str]
    alpha: Project
    experiment_id: int
    trial_id: int
    beta_trial_id: int
    beta_experiment_id: int

    def call(self, method: str, path: str, caller: str, body: Any = None) -> httpx.Response:
        headers = {} if caller == "none" else {"Authorization": f"Bearer {self.tokens[caller]}"}
        return self.client.request(method, path, headers=headers, json=body)


def _running_trial(service: MasterService, tmp: Path, name: str, project: Project) -> int:
    experiment_id = service.create_experiment(experiment_config(tmp, name), project=project)
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    (trial_id,) = service.create_trials(experiment_id, num_free=1)
    service.update_trial(trial_id, state=TrialState.RUNNING)
    return trial_id


@pytest.fixture(scope="module")
def yard(oidc_issuer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yard]:
    tmp = tmp_path_factory.mktemp("yard")
    settings = Settings(home=tmp / "home")
    store = open_store(settings.resolved_database_url())
    service = MasterService(store, settings)
    auth = AuthSpec(
        oidc=OidcSpec(issuer=oidc_issuer, audience=AUDIENCE), facility_admins=("sub-facility",)
    )
    app = create_app(service, auth=auth)
    client = TestClient(app)
    people = ["facility", "outsider", "guest", *MEMBERS]
    tokens = {who: mint(oidc_issuer, f"sub-{who}", username=who) for who in people}
    for who in people:  # first sight creates the user
        assert client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {tokens[who]}"}
        ).is_success
    with store.session() as session:
        alpha, beta = (accounts.create_project(session, name=n) for n in ("alpha", "beta"))
        for who, role in [*MEMBERS.items(), ("outsider", None)]:
            user = accounts.find_user(session, issuer=oidc_issuer, subject=f"sub-{who}")
            assert user is not None
            project, role = (beta, ProjectRole.EDITOR) if role is None else (alpha, role)
            accounts.set_membership(session, project_id=project.id, user_id=user.id, role=role)
    trial_id = _running_trial(service, tmp, "alpha-exp", alpha)
    beta_trial_id = _running_trial(service, tmp, "beta-exp", beta)
    service.issue_worker_token(trial_id)
    tokens["other_worker"] = service.issue_worker_token(beta_trial_id)
    tokens["forged"] = forged(oidc_issuer, "sub-admin")
    for caller, (claims, _) in BAD_TOKENS.items():
        tokens[caller] = mint(oidc_issuer, "sub-admin", **claims)
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    created = client.post("/api/v1/tokens", json={"name": "old"}, headers=viewer).json()
    client.delete(f"/api/v1/tokens/{created['info']['id']}", headers=viewer)
    tokens["revoked"] = created["token"]
    yield Yard(
        app=app,
        client=client,
        service=service,
        issuer=oidc_issuer,
        tokens=tokens,
        alpha=alpha,
        experiment_id=service.get_trial(trial_id).experiment_id,
        trial_id=trial_id,
        beta_trial_id=beta_trial_id,
        beta_experiment_id=service.get_trial(beta_trial_id).experiment_id,
    )
    store.close()
