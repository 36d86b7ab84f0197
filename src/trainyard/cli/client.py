"""The CLI's client of a `trainyard server` (`--master URL` or TRAINYARD_MASTER).

Typed both ways: requests and answers are the API's pydantic models (trainyard.protocol),
validated on arrival. A refusal comes back as the server's own message, raised as a
`TrainyardError` so the CLI prints it, and exits, exactly as in embedded mode.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from trainyard.errors import NotFoundError, TrainyardError
from trainyard.master.records import TrialRecord
from trainyard.protocol import (
    API_PREFIX,
    ErrorOut,
    ExperimentOut,
    ExperimentSubmission,
    LogChunk,
    TrialOut,
)

TOKEN_ENV = "TRAINYARD_TOKEN"
TIMEOUT_S = 120.0
"""Generous: a submission is preflighted (data read, model built) before the answer."""

T = TypeVar("T")


class MasterClient:
    """One server, one token; each method is one API call."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )

    def submit(self, submission: ExperimentSubmission) -> ExperimentOut:
        return self._call("POST", "/experiments", ExperimentOut, body=submission)

    def list_experiments(self, *, limit: int) -> list[ExperimentOut]:
        return self._call("GET", f"/experiments?limit={limit}", list[ExperimentOut])

    def get_experiment(self, ref: str) -> ExperimentOut:
        return self._call("GET", f"/experiments/{quote(ref, safe='')}", ExperimentOut)

    def trial_records(self, ref: str) -> list[TrialRecord]:
        path = f"/experiments/{quote(ref, safe='')}/records"
        return self._call("GET", path, list[TrialRecord])

    def control_experiment(self, ref: str, action: str) -> ExperimentOut:
        path = f"/experiments/{quote(ref, safe='')}/{action}"
        return self._call("POST", path, ExperimentOut)

    def get_trial(self, trial_id: int) -> TrialOut:
        return self._call("GET", f"/trials/{trial_id}", TrialOut)

    def read_log(self, trial_id: int, *, offset: int) -> LogChunk:
        return self._call("GET", f"/trials/{trial_id}/log?offset={offset}", LogChunk)

    def _call(self, method: str, path: str, answer: type[T], body: BaseModel | None = None) -> T:
        content = body.model_dump_json() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            response = self._http.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as err:
            raise TrainyardError(
                f"cannot reach the trainyard server at {self.url}: {err}; check --master or "
                "TRAINYARD_MASTER, and that the server runs"
            ) from None
        if response.is_error:
            raise _refusal(response)
        try:
            return TypeAdapter(answer).validate_json(response.content)
        except ValidationError as err:
            raise TrainyardError(
                f"the server at {self.url} answered {method} {path} with something this "
                f"trainyard does not understand ({err.error_count()} problem(s)); are client "
                "and server the same version?"
            ) from None


def _refusal(response: httpx.Response) -> TrainyardError:
    """The server's message as the error the CLI prints (a 404 as NotFoundError)."""
    detail = _detail(response.json() if _is_json(response) else None)
    if detail is None:
        detail = f"the server answered {response.status_code}: {response.text[:200]}"
    if response.status_code == httpx.codes.NOT_FOUND:
        return NotFoundError(detail)
    return TrainyardError(detail)


def _detail(body: Any) -> str | None:
    try:
        return ErrorOut.model_validate(body).detail
    except ValidationError:
        return None


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")
