"""The dashboard served by the Master at `/`: server-rendered pages, htmx, server-sent events.

Sign-in in embedded mode: `trainyard run` prints a link with a dashboard token (its own, not
the API's admin token). Opening it sets a session cookie (HttpOnly, SameSite=Strict, Secure
behind TLS) and drops the token from the address bar; pages need that session. Buttons that
change state (pause, activate, kill) are POST forms carrying the session's CSRF token. Facility
sign-in (OIDC) replaces the link when the server's sign-in lands (issue 9).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from trainyard.errors import PermissionDeniedError, TrainyardError
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState
from trainyard.web.curve_cache import CurveCache
from trainyard.web.pools import PoolSource, pools_view
from trainyard.web.views import (
    experiment_view,
    experiments_page,
    log_tail,
    metric_curves,
    trial_view,
)

HERE = Path(__file__).parent
SESSION_COOKIE = "trainyard_session"
LIVE_INTERVAL_S = 2.0
"""How often a page's live parts are refreshed (server-sent events)."""
CONTROL_ACTIONS = ("pause", "activate", "kill")

templates = Jinja2Templates(directory=HERE / "templates")


class NotSignedIn(Exception):
    """A page was asked for without a dashboard session."""


class DashboardSessions:
    """Sessions of one Master's dashboard, kept in memory (a restart signs everyone out)."""

    def __init__(self, login_token: str) -> None:
        self.login_token = login_token
        self._secret = secrets.token_bytes(32)
        self._sessions: set[str] = set()

    def sign_in(self, token: str) -> str | None:
        """A new session id for the right dashboard token, else None."""
        if not secrets.compare_digest(token.encode(), self.login_token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        self._sessions.add(session)
        return session

    def valid(self, session: str | None) -> bool:
        return session is not None and session in self._sessions

    def sign_out(self, session: str | None) -> None:
        self._sessions.discard(session or "")

    def csrf_token(self, session: str) -> str:
        """Bound to the session: a form from another site cannot know it."""
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()


def _sessions(request: Request) -> DashboardSessions:
    return request.app.state.dashboard_sessions


def _service(request: Request) -> MasterService:
    return request.app.state.service


def _curve_cache(request: Request) -> CurveCache:
    return request.app.state.curve_cache


def require_session(request: Request) -> str:
    session = request.cookies.get(SESSION_COOKIE)
    if not _sessions(request).valid(session):
        raise NotSignedIn
    assert session is not None
    return session


Session = Annotated[str, Depends(require_session)]
Service = Annotated[MasterService, Depends(_service)]
Curves = Annotated[CurveCache, Depends(_curve_cache)]
router = APIRouter(include_in_schema=False)


def install_dashboard(app: FastAPI, *, login_token: str, pools: PoolSource | None = None) -> None:
    """Serve the dashboard on `app` (the Master's API app, which holds the service);
    `pools` reports the executors' pools for the pools page."""
    app.state.dashboard_sessions = DashboardSessions(login_token)
    app.state.pool_source = pools
    app.state.curve_cache = CurveCache(app.state.service)
    # ECharts and a thousand curves compress 3-5x (level 5: most of level 9's gain in a third
    # of its time); event streams are left alone by Starlette.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    @app.exception_handler(NotSignedIn)
    async def _sign_in_page(request: Request, _: NotSignedIn) -> Response:
        return templates.TemplateResponse(request, "signin.html", status_code=401)


def _page(request: Request, session: str, name: str, **context: Any) -> HTMLResponse:
    csrf = _sessions(request).csrf_token(session)
    return templates.TemplateResponse(request, name, {"csrf": csrf, **context})


@router.get("/login")
def login(request: Request, token: Annotated[str, Query(max_length=512)] = "") -> Response:
    session = _sessions(request).sign_in(token)
    if session is None:
        return templates.TemplateResponse(
            request, "signin.html", {"refused": True}, status_code=401
        )
    response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
    response.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, session: Session, csrf: Annotated[str, Form()] = "") -> Response:
    _check_csrf(request, session, csrf)
    _sessions(request).sign_out(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def experiments(
    request: Request,
    session: Session,
    service: Service,
    state: ExperimentState | Literal[""] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    listing = experiments_page(service, state=state or None, query=q, page=page)
    return _page(request, session, "experiments.html", listing=listing, states=ExperimentState)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment(
    request: Request, session: Session, service: Service, curves: Curves, experiment_id: int
):
    view = experiment_view(service, experiment_id, cache=curves)
    return _page(request, session, "experiment.html", view=view)


@router.get("/experiments/{experiment_id}/curves")
def experiment_curves(
    session: Session,
    service: Service,
    curves: Curves,
    experiment_id: int,
    metric: Annotated[str, Query(min_length=1, max_length=200)],
) -> Response:
    """One validation metric's curves for every trial (the page loads the searcher's)."""
    body = metric_curves(service, experiment_id, metric, cache=curves)
    return Response(body, media_type="application/json")


@router.get("/experiments/{experiment_id}/events")
async def experiment_events(
    request: Request, session: Session, service: Service, curves: Curves, experiment_id: int
) -> StreamingResponse:
    """Server-sent events: the trial table, re-rendered whenever it changes."""

    async def stream() -> AsyncIterator[str]:
        last = ""
        while not await request.is_disconnected():
            started = time.monotonic()
            view = await run_in_threadpool(
                partial(experiment_view, cache=curves, panels=False), service, experiment_id
            )
            html = templates.get_template("_trials.html").render(view=view)
            if html != last:
                last = html
                yield "event: trials\n" + "".join(f"data: {line}\n" for line in html.splitlines())
                yield "\n"
            # A large experiment takes a while to read: never spend more than a third of the
            # time on it, however many pages are open.
            await asyncio.sleep(max(LIVE_INTERVAL_S, 2 * (time.monotonic() - started)))

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/pools", response_class=HTMLResponse)
def pools(request: Request, session: Session, service: Service) -> HTMLResponse:
    rows = pools_view(service, request.app.state.pool_source)
    return _page(request, session, "pools.html", pools=rows)


@router.get("/pools/table", response_class=HTMLResponse)
def pools_table(request: Request, session: Session, service: Service) -> HTMLResponse:
    """The pools' tables alone, which the page fetches again every LIVE_INTERVAL_S."""
    rows = pools_view(service, request.app.state.pool_source)
    return templates.TemplateResponse(request, "_pools.html", {"pools": rows})


@router.get("/trials/{trial_id}", response_class=HTMLResponse)
def trial(request: Request, session: Session, service: Service, trial_id: int):
    view = trial_view(service, trial_id)
    return _page(request, session, "trial.html", view=view, log=log_tail(view.trial))


@router.get("/trials/{trial_id}/log", response_class=HTMLResponse)
def trial_log(request: Request, session: Session, service: Service, trial_id: int):
    return templates.TemplateResponse(
        request, "_log.html", {"log": log_tail(service.get_trial(trial_id))}
    )


@router.post("/experiments/{experiment_id}/{action}")
def control(
    request: Request,
    session: Session,
    service: Service,
    experiment_id: int,
    action: str,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(request, session, csrf)
    if action not in CONTROL_ACTIONS:
        raise TrainyardError(f"unknown action {action!r}; use {', '.join(CONTROL_ACTIONS)}")
    service.control_experiment(experiment_id, action)
    return RedirectResponse(f"/experiments/{experiment_id}", status_code=303)


def _check_csrf(request: Request, session: str, csrf: str) -> None:
    expected = _sessions(request).csrf_token(session)
    if not secrets.compare_digest(csrf.encode(), expected.encode()):
        raise PermissionDeniedError(
            "the form's CSRF token does not match this session; reload the page"
        )
