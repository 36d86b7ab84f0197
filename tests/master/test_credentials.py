"""Per-attempt worker credentials: each reaches only its own trial, only while it runs.

Each test tries the attack: a worker's token used against another trial of the same
experiment, against another experiment sharing the home, after its attempt ended, and on the
read endpoints; and the admin token on a worker endpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.master.conftest import experiment_config, running_trial, worker_client
from trainyard.master.service import MasterService
from trainyard.store import WorkerCredential

REPORT = {"kind": "training", "batches": 1, "epoch": 0.1, "values": {"loss": 0.5}}


def test_a_token_of_trial_a_is_refused_on_trial_b_of_the_same_experiment(
    service: MasterService, tmp_path: Path
) -> None:
    trial_id = running_trial(service, experiment_config(tmp_path, "search", grid=True))
    experiment_id = service.get_trial(trial_id).experiment_id
    (other,) = service.create_trials(experiment_id, num_free=1)
    worker = worker_client(service, trial_id)
    for method, path, body in [
        ("GET", "spec", None),
        ("POST", "metrics", REPORT),
        ("POST", "outcome", {"state": "completed"}),
    ]:
        response = worker.request(method, f"/api/v1/trials/{other}/{path}", json=body)
        assert response.status_code == 403, path
        detail = response.json()["detail"]
        assert f"belongs to trial {trial_id}" in detail and f"not trial {other}" in detail
    assert service.trial_metrics(other) == []
    assert not service.get_trial(other).state.is_finished()


def test_a_token_is_refused_on_another_experiment_in_the_same_home(
    service: MasterService, worker: TestClient, trial_id: int, tmp_path: Path
) -> None:
    foreign = running_trial(service, experiment_config(tmp_path, "someone-else"))
    response = worker.get(f"/api/v1/trials/{foreign}/spec")
    assert response.status_code == 403
    assert f"belongs to trial {trial_id}" in response.json()["detail"]
    posted = worker.post(f"/api/v1/trials/{foreign}/outcome", json={"state": "errored"})
    assert posted.status_code == 403
    assert service.get_trial(foreign).error is None


def test_a_token_dies_when_its_attempt_ends(
    service: MasterService, worker: TestClient, trial_id: int
) -> None:
    assert worker.get(f"/api/v1/trials/{trial_id}/spec").status_code == 200
    service.end_attempt(trial_id)
    response = worker.post(f"/api/v1/trials/{trial_id}/metrics", json=REPORT)
    assert response.status_code == 401
    assert f"attempt 1 of trial {trial_id}" in response.json()["detail"]
    assert service.trial_metrics(trial_id) == []


def test_a_new_attempt_gets_a_new_token_and_the_old_one_dies(
    service: MasterService, worker: TestClient, trial_id: int
) -> None:
    retry = worker_client(service, trial_id)
    assert retry.get(f"/api/v1/trials/{trial_id}/spec").json()["attempt"] == 2
    stale = worker.get(f"/api/v1/trials/{trial_id}/spec")
    assert stale.status_code == 401
    assert "attempt 1" in stale.json()["detail"]


def test_worker_tokens_are_stored_only_as_hashes(service: MasterService, trial_id: int) -> None:
    token = service.issue_worker_token(trial_id)
    with service.store.session() as session:
        stored = [c.token_sha256 for c in session.query(WorkerCredential)]
    assert token not in stored and all(len(h) == 64 for h in stored)
    url = service.settings.resolved_database_url()
    if url.startswith("sqlite:///"):  # the file itself, WAL included, never holds it
        for path in Path(url.removeprefix("sqlite:///")).parent.glob("trainyard.db*"):
            assert token.encode() not in path.read_bytes()


def test_a_worker_token_cannot_read_the_admin_views(worker: TestClient, trial_id: int) -> None:
    for path in (f"/api/v1/trials/{trial_id}", "/api/v1/experiments"):
        response = worker.get(path)
        assert response.status_code == 403
        assert "reaches only its own trial's worker endpoints" in response.json()["detail"]


def test_the_admin_token_is_not_a_worker_credential(admin: TestClient, trial_id: int) -> None:
    response = admin.post(f"/api/v1/trials/{trial_id}/outcome", json={"state": "completed"})
    assert response.status_code == 401
    assert "credential of the trial's running attempt" in response.json()["detail"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing `Authorization: Bearer <token>` header"),
        ("Bearer ", "the bearer token is empty"),
        ("Basic dXNlcjpwYXNz", "uses the 'Basic' scheme"),
        ("Bearer wrong", "wrong bearer token"),
        ("Bearer t\u00f6ken", "must be printable ASCII"),
        ("Bearer " + "x" * 9000, "must be printable ASCII of at most 8192"),
    ],
)
def test_malformed_credentials_are_401_with_a_reason(
    api: TestClient, header: str | None, message: str
) -> None:
    headers = {} if header is None else {"Authorization": header.encode("utf-8")}
    response = api.get("/api/v1/experiments", headers=headers)
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_healthz_needs_no_credential(api: TestClient) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
