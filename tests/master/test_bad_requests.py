"""Malformed requests get a 4xx JSON error naming the field and the problem, never a 5xx.

Each case is one the issue names: unknown enum values in query strings, ids beyond 2^63,
bodies over the size limit (declared or streamed), too many metrics, non-finite values.
(Malformed bearer tokens are in test_credentials.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.master.conftest import ADMIN_TOKEN
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.protocol import MAX_METRICS_PER_REPORT
from trainyard.store.rocs import validation_roc


def _report(values: dict[str, object]) -> dict[str, object]:
    return {"kind": "training", "batches": 1, "epoch": 0.1, "values": values}


def test_an_unknown_enum_value_in_a_query_names_the_parameter(
    admin: TestClient, trial_id: int
) -> None:
    response = admin.get(f"/api/v1/trials/{trial_id}/metrics", params={"kind": "testing"})
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "query.kind"
    assert "'training' or 'validation'" in body["detail"]


@pytest.mark.parametrize(
    "trial", ["2147483648", "9223372036854775808", "99999999999999999999999", "0", "-3"]
)
def test_ids_outside_the_store_range_are_refused(admin: TestClient, trial: str) -> None:
    response = admin.get(f"/api/v1/trials/{trial}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.trial_id"


def test_an_experiment_id_beyond_2_63_is_not_found(admin: TestClient) -> None:
    response = admin.get("/api/v1/experiments/99999999999999999999999")
    assert response.status_code == 404
    assert "no experiment with id 99999999999999999999999" in response.json()["detail"]


def test_a_worker_id_beyond_the_store_range_is_refused_before_its_token_is_looked_up(
    worker: TestClient,
) -> None:
    response = worker.get("/api/v1/trials/18446744073709551616/spec")
    assert response.status_code == 422
    assert "less than or equal to 2147483647" in response.json()["detail"]


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(
    service: MasterService, trial_id: int
) -> None:
    token = service.issue_worker_token(trial_id)
    client = TestClient(
        create_app(service, admin_token=ADMIN_TOKEN, max_request_bytes=1000),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    url = f"/api/v1/trials/{trial_id}/outcome"
    big = b'{"state": "errored", "message": "' + b"x" * 2000 + b'"}'
    declared = client.post(url, content=big)
    assert declared.status_code == 413
    assert "limit of 1000 bytes (TRAINYARD_MAX_REQUEST_BYTES)" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield big[:600]
        yield big[600:]

    streamed = client.post(url, content=chunks())
    assert streamed.status_code == 413
    assert service.get_trial(trial_id).error is None
    small = client.post(url, content=b'{"state": "errored", "message": "short"}')
    assert small.status_code == 204


def test_the_default_limit_is_one_mebibyte(service: MasterService, trial_id: int) -> None:
    token = service.issue_worker_token(trial_id)
    client = TestClient(
        create_app(service, admin_token=ADMIN_TOKEN), headers={"Authorization": f"Bearer {token}"}
    )
    message = "x" * (1024 * 1024)
    response = client.post(
        f"/api/v1/trials/{trial_id}/outcome", json={"state": "errored", "message": message}
    )
    assert response.status_code == 413
    assert "1048576 bytes" in response.json()["detail"]


def test_too_many_metrics_in_one_report_names_the_field(worker: TestClient, trial_id: int) -> None:
    values = {f"m{i}": 0.5 for i in range(MAX_METRICS_PER_REPORT + 1)}
    response = worker.post(f"/api/v1/trials/{trial_id}/metrics", json=_report(values))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.values"
    assert f"at most {MAX_METRICS_PER_REPORT} items" in response.json()["detail"]


@pytest.mark.parametrize("payload", [b'{"loss": NaN}', b'{"loss": "nan"}', b'{"loss": "NaN"}'])
def test_a_nan_metric_is_refused_with_its_name(
    worker: TestClient, service: MasterService, trial_id: int, payload: bytes
) -> None:
    body = b'{"kind": "training", "batches": 1, "epoch": 0.1, "values": ' + payload + b"}"
    response = worker.post(
        f"/api/v1/trials/{trial_id}/metrics",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "`body.values.loss" in response.json()["detail"]
    assert service.trial_metrics(trial_id) == []


def test_infinite_metrics_are_kept(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    values = {"val_rej30": "inf", "val_rej50": "Infinity", "val_auc": 0.9}
    response = worker.post(f"/api/v1/trials/{trial_id}/metrics", json=_report(values))
    assert response.status_code == 204
    (stored,) = service.trial_metrics(trial_id)
    assert stored.values == {"val_rej30": float("inf"), "val_rej50": float("inf"), "val_auc": 0.9}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"batches": True}, "body.batches"),
        ({"batches": 1, "total_batches": "3"}, "body.total_batches"),
        ({"batches": 2**64}, "body.batches"),
        ({"batches": 2**31}, "body.batches"),
    ],
)
def test_heartbeats_take_only_whole_numbers(
    worker: TestClient, trial_id: int, body: dict[str, object], field: str
) -> None:
    response = worker.post(f"/api/v1/trials/{trial_id}/heartbeat", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_a_body_that_is_not_json_is_4xx(worker: TestClient, trial_id: int) -> None:
    for content in (b"{not json", b"\xff\xfe\x00"):
        response = worker.post(
            f"/api/v1/trials/{trial_id}/heartbeat",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code in (400, 422)
        assert response.json()["detail"]


def test_a_nul_character_in_stored_text_is_refused_not_a_server_error(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    """PostgreSQL's text columns cannot hold NUL: found by the OpenAPI fuzz test."""
    entry = {"batches": 0, "epoch": 0.0, "path": "a\u0000b"}
    response = worker.put(f"/api/v1/trials/{trial_id}/checkpoints", json={"checkpoints": [entry]})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.checkpoints.0.path"
    outcome = {"state": "errored", "message": "boom\u0000"}
    response = worker.post(f"/api/v1/trials/{trial_id}/outcome", json=outcome)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.message"
    assert service.trial_checkpoints(trial_id) == []


def test_a_validation_roc_is_stored_with_its_report(
    worker: TestClient, service: MasterService, trial_id: int
) -> None:
    roc = {"signal_efficiency": [0.5, 1.0], "background_efficiency": [0.02, 0.4]}
    report = {**_report({"val_auc": 0.9}), "kind": "validation", "batches": 5, "roc": roc}
    assert worker.post(f"/api/v1/trials/{trial_id}/metrics", json=report).status_code == 204
    with service.store.session() as session:
        stored = validation_roc(session, trial_id=trial_id, batches=5)
    assert stored is not None and stored.model_dump() == roc


@pytest.mark.parametrize(
    ("roc", "problem"),
    [
        ({"signal_efficiency": [0, 0.5, 1], "background_efficiency": [0, 0.1]}, "it has 3 and 2"),
        ({"signal_efficiency": [1.0, 0.5], "background_efficiency": [0.1, 0.2]}, "decrease"),
        ({"signal_efficiency": [0.5, 1.5], "background_efficiency": [0.1, 0.2]}, "less than"),
    ],
)
def test_a_malformed_roc_is_refused_with_the_reason(
    worker: TestClient, service: MasterService, trial_id: int, roc: object, problem: str
) -> None:
    report = {**_report({"val_auc": 0.9}), "kind": "validation", "roc": roc}
    response = worker.post(f"/api/v1/trials/{trial_id}/metrics", json=report)
    assert response.status_code == 422
    assert "body.roc" in response.json()["detail"] and problem in response.json()["detail"]
    assert service.trial_metrics(trial_id) == []
