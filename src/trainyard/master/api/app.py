"""Assemble the Master's FastAPI app: routers, credentials, the body limit, error mapping."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from trainyard import __version__
from trainyard.auth import Access, Accounts, Authenticator
from trainyard.config.auth import ApiTokenPolicy, AuthConfig, AuthSpec
from trainyard.master.api.errors import BodySizeLimit, install_error_handlers
from trainyard.master.api.routes import accounts, admin, experiments, projects, trials, worker
from trainyard.master.api.routes.experiments import Submitter
from trainyard.master.pack_joins import PackJoins
from trainyard.master.project_admin import ProjectAdmin
from trainyard.master.project_disk import ProjectDisk
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import API_PREFIX

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DISK_REFRESH_S = 300.0
"""How long a project's measured disk use is shown; a server replaces `project_admin` with
one on its loop's measurements (the server file's `shares.disk_usage_refresh_s`)."""


def create_app(
    service: MasterService,
    *,
    admin_token: str | None = None,
    auth: AuthConfig = "none",
    authenticator: Authenticator | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    submitter: Submitter | None = None,
) -> FastAPI:
    """The API served by `trainyard run` (embedded) and `trainyard server`.

    Args:
        service: the Master's service over its store.
        admin_token: the embedded Master's per-run token (the CLI's), which acts as the local
            facility admin. Workers use their own per-attempt credentials, issued by the
            service when a trial is launched.
        auth: the server file's `auth` section; `none` (the default) has no provider.
        authenticator: resolves bearer tokens; built from `auth` and `admin_token` when not
            given (tests pass one whose provider they run).
        max_request_bytes: larger request bodies are refused with 413.
        submitter: what runs submitted experiments (a server's loop); without one, as in
            `trainyard run`, submissions are refused.
    """
    app = FastAPI(title="trainyard Master", version=__version__)
    app.state.service = service
    app.state.reports = TrialReports(service)
    app.state.pack_joins = PackJoins(service, app.state.reports)
    app.state.submitter = submitter
    app.state.authenticator = authenticator or Authenticator(
        service.store, auth, local_token=admin_token
    )
    app.state.access = Access(service.store)
    policy = auth.api_tokens if isinstance(auth, AuthSpec) else ApiTokenPolicy()
    app.state.accounts = Accounts(service.store, app.state.access, policy)
    app.state.project_admin = ProjectAdmin(
        service.store, ProjectDisk(service.settings.resolved_home(), refresh_s=DISK_REFRESH_S)
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    install_error_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    for router in (worker.router, trials.router, experiments.router):
        api.include_router(router)
    for router in (accounts.router, projects.router, admin.router):
        api.include_router(router)
    app.include_router(api)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
