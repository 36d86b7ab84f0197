"""Assemble the Master's FastAPI app: routers, the token check, and error mapping."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse

from trainyard import __version__
from trainyard.errors import ConfigError, NotFoundError, TrainyardError
from trainyard.master.api.deps import require_token
from trainyard.master.api.routes import experiments, trials
from trainyard.master.service import MasterService

API_PREFIX = "/api/v1"

_STATUS_BY_ERROR: list[tuple[type[TrainyardError], int]] = [
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConfigError, status.HTTP_422_UNPROCESSABLE_CONTENT),
]


def create_app(service: MasterService, *, token: str) -> FastAPI:
    """The API served by `trainyard run` (embedded) and, later, `trainyard server`."""
    app = FastAPI(title="trainyard Master", version=__version__)
    app.state.service = service
    app.state.token = token
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_token)])
    api.include_router(trials.router)
    api.include_router(experiments.router)
    app.include_router(api)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.exception_handler(TrainyardError)
    def trainyard_error(_request: Request, err: TrainyardError) -> JSONResponse:
        code = next(
            (code for kind, code in _STATUS_BY_ERROR if isinstance(err, kind)),
            status.HTTP_409_CONFLICT,
        )
        return JSONResponse(status_code=code, content={"detail": str(err)})

    return app
