"""Assemble the Master's FastAPI app: routers, credentials, the body limit, error mapping."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from trainyard import __version__
from trainyard.master.api.deps import require_admin
from trainyard.master.api.errors import BodySizeLimit, install_error_handlers
from trainyard.master.api.routes import experiments, trials, worker
from trainyard.master.api.routes.experiments import Submitter
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import API_PREFIX

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024


def create_app(
    service: MasterService,
    *,
    admin_token: str,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    submitter: Submitter | None = None,
) -> FastAPI:
    """The API served by `trainyard run` (embedded) and `trainyard server`.

    Args:
        service: the Master's service over its store.
        admin_token: the token of the read endpoints (the CLI's). Workers use their own
            per-attempt credentials, issued by the service when a trial is launched.
        max_request_bytes: larger request bodies are refused with 413.
        submitter: what runs submitted experiments (a server's loop); without one, as in
            `trainyard run`, submissions are refused.
    """
    app = FastAPI(title="trainyard Master", version=__version__)
    app.state.service = service
    app.state.reports = TrialReports(service)
    app.state.admin_token = admin_token
    app.state.submitter = submitter
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    install_error_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(worker.router)
    reads = APIRouter(dependencies=[Depends(require_admin)])
    reads.include_router(trials.router)
    reads.include_router(experiments.router)
    api.include_router(reads)
    app.include_router(api)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
