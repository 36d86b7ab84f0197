"""Every error the API answers, as one JSON shape (`protocol.ErrorOut`), never a traceback.

Errors a caller can cause map to 4xx with a message that names the field or the credential and
says what to do: trainyard's own errors by class, malformed requests (FastAPI's validation)
with one entry per wrong field, bodies over the size limit as 413. Anything else is a bug of
ours: it is logged with a reference, and the caller gets a 500 that names the reference.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trainyard.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    TrainyardError,
)
from trainyard.protocol import ErrorOut, FieldError

logger = logging.getLogger(__name__)

_STATUS_BY_ERROR: list[tuple[type[TrainyardError], int]] = [
    (AuthenticationError, status.HTTP_401_UNAUTHORIZED),
    (PermissionDeniedError, status.HTTP_403_FORBIDDEN),
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConfigError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ServiceUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": description}
    for code, description in [
        (400, "The request body is not UTF-8 JSON"),
        (401, "No credential, or one this Master does not accept"),
        (403, "The credential may not reach this resource"),
        (404, "No such experiment or trial"),
        (409, "The request conflicts with the current state"),
        (413, "The request body is over the size limit"),
        (422, "A field of the request is malformed"),
        (503, "The identity provider cannot be reached"),
    ]
}
"""Documented on every router, so the OpenAPI document lists what each route can answer."""


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TrainyardError, _trainyard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def _body(detail: str, errors: list[FieldError] | None = None) -> dict[str, Any]:
    return ErrorOut(detail=detail, errors=errors or []).model_dump(mode="json")


def _trainyard_error(_request: Request, err: Exception) -> JSONResponse:
    code = next(
        (code for kind, code in _STATUS_BY_ERROR if isinstance(err, kind)),
        status.HTTP_409_CONFLICT,
    )
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return JSONResponse(status_code=code, content=_body(str(err)), headers=headers)


def _validation_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    errors = [
        FieldError(field=".".join(str(part) for part in e["loc"]), problem=str(e["msg"]))
        for e in err.errors()
    ]
    detail = "; ".join(f"`{e.field}`: {e.problem}" for e in errors) or "malformed request"
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content=_body(detail, errors)
    )


def _http_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    detail = str(err.detail)
    if err.status_code == status.HTTP_400_BAD_REQUEST:
        detail = f"{detail}: the request body must be UTF-8 encoded JSON"
    return JSONResponse(status_code=err.status_code, content=_body(detail), headers=err.headers)


def _unexpected_error(request: Request, err: Exception) -> JSONResponse:
    reference = secrets.token_hex(4)
    logger.exception("error %s in %s %s", reference, request.method, request.url.path)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content=_body(
            f"internal error {reference} in the Master; its log has the details under that "
            "reference. Please report it"
        ),
    )


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, before any handler reads them.

    The declared Content-Length is checked first; a body sent without one (chunked) is counted
    as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            content=_body(
                f"the request body is over the Master's limit of {self.max_bytes} bytes "
                "(TRAINYARD_MAX_REQUEST_BYTES); send less, e.g. fewer metrics per report"
            ),
        )
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the buffered body over once, then defers to the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
