"""Schemathesis over the Master's own OpenAPI document: every operation, authenticated, with
generated valid and invalid requests. Any 5xx, or an answer that breaks the document
(undocumented status, body not matching its schema, a malformed request accepted), fails.

Worker operations are called on a live trial with a fresh credential for each request, so the
generated bodies reach the handlers instead of stopping at a 403; read operations use the
admin token. The number of examples is bounded so the whole run stays under a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.master.conftest import ADMIN_TOKEN, experiment_config, running_trial
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService


def malformed_data_is_rejected(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Schemathesis's negative-data check, where 413 (body over the size limit) also counts
    as a rejection."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    malformed_data_is_rejected,
]
EXAMPLES_PER_OPERATION_AND_MODE = 15


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_request_gets_a_server_error_or_breaks_the_schema(
    service: MasterService, tmp_path: Path, mode: GenerationMode
) -> None:
    trial_id = running_trial(service, experiment_config(tmp_path, "fuzzed"))
    app = create_app(service, admin_token=ADMIN_TOKEN, max_request_bytes=64 * 1024)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11, "every route is in the document"

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not _takes_input(operation):
            continue  # nothing to get wrong (/healthz)
        _fuzz(operation, mode, service=service, trial_id=trial_id)


def _takes_input(operation: schemathesis.APIOperation) -> bool:
    return any(True for _ in operation.iter_parameters()) or bool(
        operation.get_request_payload_content_types()
    )


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    *,
    service: MasterService,
    trial_id: int,
) -> None:
    worker = "worker" in (operation.tags or [])

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        token = ADMIN_TOKEN
        if worker:
            case.path_parameters = {**(case.path_parameters or {}), "trial_id": trial_id}
            token = service.issue_worker_token(trial_id)
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    call()
