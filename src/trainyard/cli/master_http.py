"""A small typed HTTP client of a shared Master, for `trainyard token` and `trainyard login`.

Answers are parsed into the API's own pydantic models; an error answer becomes a
TrainyardError carrying the Master's message (which already says what to do), prefixed with
who answered.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from trainyard.errors import TrainyardError
from trainyard.protocol import API_PREFIX, ErrorOut

T = TypeVar("T")
TIMEOUT_S = 30.0


class MasterHttp:
    """Calls to one Master with one bearer token (None for a Master with `auth: none`)."""

    def __init__(
        self, master: str, token: str | None, *, http: httpx.Client | None = None
    ) -> None:
        self.master = master.rstrip("/")
        self._token = token
        self._http = http or httpx.Client(timeout=TIMEOUT_S)

    def call(self, method: str, path: str, answer: type[T], body: Any = None) -> T:
        """`method` on API_PREFIX + `path`, the answer parsed as `answer`.

        Raises:
            TrainyardError: the Master cannot be reached, or refused the request.
        """
        url = f"{self.master}{API_PREFIX}{path}"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = self._http.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as error:
            raise TrainyardError(
                f"cannot reach the Master at {self.master} ({error}); check --master or "
                "TRAINYARD_MASTER"
            ) from error
        if response.is_error:
            raise TrainyardError(f"the Master at {self.master} answered {_describe(response)}")
        if answer is type(None):
            return None  # type: ignore[return-value]
        return TypeAdapter(answer).validate_python(response.json())


def _describe(response: httpx.Response) -> str:
    try:
        detail = ErrorOut.model_validate(response.json()).detail
    except ValueError:
        detail = response.text[:200]
    return f"{response.status_code}: {detail}"
