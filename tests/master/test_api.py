"""The worker-facing HTTP API over a real store: auth, the trial lifecycle, error statuses."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from trainyard.config import ExperimentConfig
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import ExperimentState, TrialState

TOKEN = "s3cret"


@pytest.fixture
def trial_id(service: MasterService, config: ExperimentConfig) -> int:
    experiment_id = service.create_experiment(config)
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    (created,) = service.create_trials(experiment_id, num_free=1)
    service.update_trial(created, state=TrialState.RUNNING)
    return created


@pytest.fixture
def client(service: MasterService) -> TestClient:
    return TestClient(
        create_app(service, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}
    )


def test_every_api_call_needs_the_token(service: MasterService, trial_id: int) -> None:
    anonymous = TestClient(create_app(service, token=TOKEN))
    response = anonymous.get(f"/api/v1/trials/{trial_id}/spec")
    assert response.status_code == 401
    assert "bearer token" in response.json()["detail"]
    wrong = anonymous.get(f"/api/v1/trials/{trial_id}/spec", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert anonymous.get("/healthz").status_code == 200


def test_spec_carries_config_hyperparameters_checkpoint_and_staging_dirs(
    client: TestClient, trial_id: int, settings: Settings
) -> None:
    spec = client.get(f"/api/v1/trials/{trial_id}/spec").json()
    assert spec["config"]["name"] == "api-test"
    assert spec["hyperparameters"] == {"lr": 0.01}
    assert spec["checkpoint_dir"].endswith("trials/0000/checkpoints")
    assert spec["staging_dir"] == str(settings.resolved_home() / "cache" / "staged")


def test_trial_lifecycle_through_the_api(
    client: TestClient, service: MasterService, trial_id: int
) -> None:
    base = f"/api/v1/trials/{trial_id}"
    assert (
        client.post(f"{base}/heartbeat", json={"batches": 3, "total_batches": 10}).status_code
        == 204
    )
    report = {
        "kind": "validation",
        "batches": 5,
        "epoch": 0.5,
        "values": {"val_auc": 0.9, "val_rej30": "inf"},
    }
    assert client.post(f"{base}/metrics", json=report).status_code == 204
    assert client.get(f"{base}/decision").json() == {"action": "continue", "reason": ""}
    checkpoint = {"batches": 5, "path": "/x/step-00000005", "info": {"epoch": 0.5}}
    assert client.post(f"{base}/checkpoints", json=checkpoint).status_code == 204
    assert client.post(f"{base}/outcome", json={"state": "completed"}).status_code == 204

    trial = client.get(base).json()
    assert trial["state"] == "COMPLETED"
    assert trial["batches_trained"] == 5 and trial["total_batches"] == 10
    metrics = client.get(f"{base}/metrics").json()
    assert metrics[0]["values"]["val_rej30"] == "Infinity"
    assert service.latest_checkpoint_path(trial_id) == "/x/step-00000005"


def test_paused_experiment_tells_workers_to_stop(
    client: TestClient, service: MasterService, trial_id: int
) -> None:
    experiment_id = service.get_trial(trial_id).experiment_id
    service.set_experiment_state(experiment_id, ExperimentState.PAUSED)
    assert client.get(f"/api/v1/trials/{trial_id}/decision").json() == {
        "action": "stop",
        "reason": "experiment is PAUSED",
    }


def test_first_outcome_wins(client: TestClient, trial_id: int) -> None:
    base = f"/api/v1/trials/{trial_id}"
    client.post(f"{base}/outcome", json={"state": "errored", "message": "boom"})
    client.post(f"{base}/outcome", json={"state": "completed"})
    assert client.get(base).json()["state"] == "ERRORED"


def test_unknown_trial_is_404_with_a_message(client: TestClient) -> None:
    response = client.get("/api/v1/trials/999/spec")
    assert response.status_code == 404
    assert "no trial with id 999" in response.json()["detail"]


def test_bad_report_is_422(client: TestClient, trial_id: int) -> None:
    response = client.post(
        f"/api/v1/trials/{trial_id}/metrics", json={"kind": "test", "batches": -1}
    )
    assert response.status_code == 422


def test_experiments_are_listed_and_found_by_name(client: TestClient, trial_id: int) -> None:
    listed = client.get("/api/v1/experiments").json()
    assert [e["name"] for e in listed] == ["api-test"]
    assert client.get("/api/v1/experiments/api-test").json()["num_trials"] == 1
    trials = client.get("/api/v1/experiments/api-test/trials").json()
    assert [t["id"] for t in trials] == [trial_id]


def test_openapi_documents_the_worker_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for suffix in ("spec", "metrics", "checkpoints", "heartbeat", "decision", "outcome"):
        assert f"/api/v1/trials/{{trial_id}}/{suffix}" in paths


def test_embedded_server_advertises_a_reachable_host(service: MasterService) -> None:
    from trainyard.master.server import EmbeddedServer

    server = EmbeddedServer(
        create_app(service, token=TOKEN), host="0.0.0.0", advertised_host="node01.example"
    )
    try:
        assert server.url == f"http://node01.example:{server.port}"
    finally:
        server.stop()
