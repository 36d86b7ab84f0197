"""The Master's HTTP API over a real store: the trial lifecycle as a worker drives it, the
read views the CLI uses, and the OpenAPI document."""

from __future__ import annotations

import jsonschema_rs
from fastapi.testclient import TestClient

from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, TrialState
from trainyard.settings import Settings


def test_spec_carries_the_resolved_config_checkpoint_and_staging_dirs(
    worker: TestClient, trial_id: int, settings: Settings
) -> None:
    spec = worker.get(f"/api/v1/trials/{trial_id}/spec").json()
    assert spec["config"]["experiment"] == "api-test"
    assert spec["config"]["hyperparameters"] == {"lr": 0.01}
    assert spec["config"]["training"]["optimizer"]["lr"] == 0.01
    assert spec["attempt"] == 1
    assert spec["checkpoint_dir"].endswith("trials/0000/checkpoints")
    assert spec["staging_dir"] == str(settings.resolved_home() / "cache" / "staged")


def test_trial_lifecycle_through_the_api(
    worker: TestClient, admin: TestClient, service: MasterService, trial_id: int
) -> None:
    base = f"/api/v1/trials/{trial_id}"
    beat = {"batches": 3, "total_batches": 10}
    assert worker.post(f"{base}/heartbeat", json=beat).status_code == 204
    report = {
        "kind": "validation",
        "batches": 5,
        "epoch": 0.5,
        "values": {"val_auc": 0.9, "val_rej30": "inf"},
    }
    assert worker.post(f"{base}/metrics", json=report).status_code == 204
    assert worker.get(f"{base}/decision").json() == {"action": "continue", "reason": ""}
    inventory = {"checkpoints": [{"batches": 5, "path": "/x/step-00000005", "epoch": 0.5}]}
    assert worker.put(f"{base}/checkpoints", json=inventory).status_code == 204
    assert worker.post(f"{base}/outcome", json={"state": "completed"}).status_code == 204

    trial = admin.get(base).json()
    assert trial["state"] == "COMPLETED"
    assert trial["batches_trained"] == 5 and trial["total_batches"] == 10
    metrics = admin.get(f"{base}/metrics").json()
    assert metrics[0]["values"]["val_rej30"] == "Infinity"
    _assert_fits_the_published_schema(admin, metrics[0], "MetricOut")
    assert admin.get(f"{base}/checkpoints").json()[0]["path"] == "/x/step-00000005"


def test_a_validation_resent_at_the_same_step_is_stored_once(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    report = {"kind": "validation", "batches": 5, "epoch": 0.5, "values": {"val_auc": 0.9}}
    for _ in range(2):
        assert worker.post(f"/api/v1/trials/{trial_id}/metrics", json=report).status_code == 204
    assert len(service.trial_metrics(trial_id)) == 1


def test_the_checkpoint_inventory_makes_the_store_match_the_disk(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    url = f"/api/v1/trials/{trial_id}/checkpoints"

    def sync(*steps: int) -> list[str]:
        entries = [{"batches": b, "path": f"/c/step-{b:08d}", "epoch": b / 10} for b in steps]
        assert worker.put(url, json={"checkpoints": entries}).status_code == 204
        return [c.path for c in service.trial_checkpoints(trial_id)]

    assert sync(10, 20) == ["/c/step-00000020", "/c/step-00000010"]
    assert sync(20, 30) == ["/c/step-00000030", "/c/step-00000020"]  # 10 removed by `keep`
    assert sync() == []  # the folder was deleted by hand


def test_paused_experiment_tells_workers_to_stop(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    experiment_id = service.get_trial(trial_id).experiment_id
    service.set_experiment_state(experiment_id, ExperimentState.PAUSED)
    decision = worker.get(f"/api/v1/trials/{trial_id}/decision").json()
    assert decision == {"action": "stop", "reason": "experiment is PAUSED"}


def test_the_first_outcome_is_final_and_ends_the_attempt(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    base = f"/api/v1/trials/{trial_id}"
    errored = {"state": "errored", "message": "boom"}
    assert worker.post(f"{base}/outcome", json=errored).status_code == 204
    late = worker.post(f"{base}/outcome", json={"state": "completed"})
    assert late.status_code == 401
    assert "attempt 1" in late.json()["detail"]
    assert service.get_trial(trial_id).state is TrialState.ERRORED
    assert service.get_trial(trial_id).error == "boom"


def test_unknown_trial_is_404_with_a_message(admin: TestClient) -> None:
    response = admin.get("/api/v1/trials/999")
    assert response.status_code == 404
    assert "no trial with id 999" in response.json()["detail"]


def test_experiments_are_listed_and_found_by_name(admin: TestClient, trial_id: int) -> None:
    listed = admin.get("/api/v1/experiments").json()
    assert [e["name"] for e in listed] == ["api-test"]
    assert admin.get("/api/v1/experiments/api-test").json()["num_trials"] == 1
    trials = admin.get("/api/v1/experiments/api-test/trials").json()
    assert [t["id"] for t in trials] == [trial_id]


def test_openapi_documents_the_worker_endpoints(admin: TestClient) -> None:
    paths = admin.get("/openapi.json").json()["paths"]
    for suffix in ("spec", "metrics", "checkpoints", "heartbeat", "decision", "outcome"):
        assert f"/api/v1/trials/{{trial_id}}/{suffix}" in paths


def test_embedded_server_advertises_a_reachable_host(service: MasterService) -> None:
    from trainyard.master.server import EmbeddedServer

    server = EmbeddedServer(
        create_app(service, admin_token="x"), host="0.0.0.0", advertised_host="node01.example"
    )
    try:
        assert server.url == f"http://node01.example:{server.port}"
    finally:
        server.stop()


def _assert_fits_the_published_schema(client: TestClient, body: object, name: str) -> None:
    """An answer a client validates against the OpenAPI document must pass (an infinity is
    the string "Infinity", which the schema has to allow)."""
    document = client.get("/openapi.json").json()
    schema = {**document["components"]["schemas"][name], "components": document["components"]}
    jsonschema_rs.validator_for(schema).validate(body)
