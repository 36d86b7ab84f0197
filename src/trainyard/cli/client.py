"""The CLI's one client of a shared Master (`--master URL` or TRAINYARD_MASTER).

Typed both ways: requests and answers are the API's pydantic models (trainyard.protocol,
trainyard.auth.schemas), validated on arrival. A refusal comes back as the server's own
message, raised as a `TrainyardError` so the CLI prints it, and exits, exactly as in embedded
mode. Every command sends the same credential (cli/credentials.py: TRAINYARD_TOKEN, else the
stored `trainyard login`).
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from trainyard.cli.credentials import bearer_for
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

TIMEOUT_S = 120.0
"""Generous: a submission is preflighted (data read, model built) before the answer."""

T = TypeVar("T")


class MasterClient:
    """One server, one token (None for a Master with `auth: none`); each method is one call."""

    def __init__(self, url: str, *, token: str | None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=TIMEOUT_S,
        )

    @classmethod
    def signed_in(cls, url: str) -> MasterClient:
        """A client sending the user's credential (TRAINYARD_TOKEN or their `trainyard login`)."""
        return cls(url, token=bearer_for(url))

    def submit(self, submission: ExperimentSubmission) -> ExperimentOut:
        return self.call("POST", "/experiments", ExperimentOut, body=submission)

    def list_experiments(self, *, limit: int) -> list[ExperimentOut]:
        return self.call("GET", f"/experiments?limit={limit}", list[ExperimentOut])

    def get_experiment(self, ref: str) -> ExperimentOut:
        return self.call("GET", f"/experiments/{quote(ref, safe='')}", ExperimentOut)

    def trial_records(self, ref: str) -> list[TrialRecord]:
        path = f"/experiments/{quote(ref, safe='')}/records"
        return self.call("GET", path, list[TrialRecord])

    def control_experiment(self, ref: str, action: str) -> ExperimentOut:
        path = f"/experiments/{quote(ref, safe='')}/{action}"
        return self.call("POST", path, ExperimentOut)

    def get_trial(self, trial_id: int) -> TrialOut:
        return self.call("GET", f"/trials/{trial_id}", TrialOut)

    def read_log(self, trial_id: int, *, offset: int) -> LogChunk:
        return self.call("GET", f"/trials/{trial_id}/log?offset={offset}", LogChunk)

    def call(self, method: str, path: str, answer: type[T], body: BaseModel | None = None) -> T:
        """`method` on the API's `path`, the answer parsed as `answer` (None for no content).

        Raises:
            NotFoundError: the server answered 404 (its message).
            TrainyardError: the server cannot be reached, or refused the request.
        """
        # Only the fields set: a PATCH's absent keys change nothing, its nulls clear.
        content = body.model_dump_json(exclude_unset=True) if body is not None else None
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
        if answer is type(None):
            return None  # type: ignore[return-value]
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
