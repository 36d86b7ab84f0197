"""Dependencies every handler declares in its signature: the service and the token check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from trainyard.master.service import MasterService

_bearer = HTTPBearer(auto_error=False)


def _service(request: Request) -> MasterService:
    return request.app.state.service


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every call carries the Master's bearer token; compared in constant time."""
    expected: str = request.app.state.token
    if credentials is None or not secrets.compare_digest(credentials.credentials, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token (TRAINYARD_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ServiceDep = Annotated[MasterService, Depends(_service)]
