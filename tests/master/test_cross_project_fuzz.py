"""Schemathesis as a second user: every operation of the OpenAPI document, generated requests
aimed at another project's experiment, trial, project, member and token, sent with the token of
a user who is only an editor of `beta`. None may succeed, and no answer may show anything of
`alpha` (the route table in test_authorization.py checks each route's exact refusal; this
throws generated bodies, queries and headers at them too).

Worker routes are left out: they take only a trial's own credential (tested there).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.master.yard import Yard, yard
from trainyard.store import accounts

__all__ = ["yard"]

EXAMPLES_PER_OPERATION = 10
ALPHA_EXPERIMENT = "alpha-exp"
"""The name of alpha's experiment in the yard: it must never reach the outsider."""


def _alpha_targets(yard: Yard) -> dict[str, Any]:
    """Path parameters naming alpha's things (a token of one of alpha's members included)."""
    with yard.service.store.session() as session:
        viewer = accounts.find_user(session, issuer=yard.issuer, subject="sub-viewer")
        assert viewer is not None
        (token,) = accounts.list_api_tokens(session, user_id=viewer.id)
        token_id = token.id
    return {
        "ref": str(yard.experiment_id),
        "trial_id": yard.trial_id,
        "name": "alpha",
        "member": "viewer",
        "token_id": token_id,
    }


def test_a_second_users_generated_requests_reach_nothing_of_another_project(yard: Yard) -> None:
    assert yard.service.get_experiment(yard.experiment_id).name == ALPHA_EXPERIMENT
    schema = schemathesis.openapi.from_asgi("/openapi.json", yard.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    targets = _alpha_targets(yard)
    headers = {"Authorization": f"Bearer {yard.tokens['outsider']}"}
    aimed_operations = 0
    for operation in operations:
        if "worker" in (operation.tags or []):
            continue
        aimed = {p.name for p in operation.path_parameters} & set(targets)
        aimed_operations += bool(aimed)
        _fuzz(operation, targets, headers, aimed=bool(aimed))
    assert aimed_operations >= 10, "the experiment, trial, project and token routes are aimed"
    assert yard.service.get_experiment(yard.experiment_id).state.value == "RUNNING"


def _fuzz(
    operation: schemathesis.APIOperation,
    targets: dict[str, Any],
    headers: dict[str, str],
    *,
    aimed: bool,
) -> None:
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        parameters = case.path_parameters or {}
        case.path_parameters = {
            **parameters,
            **{k: targets[k] for k in parameters if k in targets},
        }
        into_alpha = isinstance(case.body, dict) and "project" in case.body
        if into_alpha:
            case.body = {**case.body, "project": "alpha"}  # a submission into alpha
        response = case.call(headers=headers)
        where = f"{case.method} {case.formatted_path}"
        if aimed or into_alpha:
            assert response.status_code >= 400, f"{where} answered {response.status_code}"
        assert ALPHA_EXPERIMENT not in response.text, f"{where} showed alpha's experiment"

    call()
