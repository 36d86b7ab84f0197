"""The dashboard served by the Master at `/`: server-rendered pages, htmx, server-sent events.

Sign-in (web/signin.py): `trainyard run` prints a link with a dashboard token, a facility
server sends the browser to its OIDC provider; either way the browser gets a server-side
session bound to a user. Every page checks that user's role in the experiment's project as the
API does (auth/access.py): the experiments list holds only their projects' experiments, an
experiment or trial of another project is "not found", and pause, activate and kill need the
editor role. Buttons that change state are POST forms carrying the session's CSRF token.
"""

from __future__ import annotations

import asyncio
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

from trainyard.auth import Access, UserPrincipal
from trainyard.config.auth import OidcSpec
from trainyard.errors import PermissionDeniedError, TrainyardError
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, ProjectRole
from trainyard.web.pools import PoolRow, PoolSource, pools_view
from trainyard.web.signin import (
    SESSION_LIFETIME_S,
    SIGN_IN_WINDOW_S,
    DashboardSessions,
    OidcSignIn,
    SignInRefused,
    WebSession,
)
from trainyard.web.views import (
    ExperimentFilters,
    experiment_view,
    experiments_page,
    log_tail,
    metric_curves,
    trial_view,
)

HERE = Path(__file__).parent
SESSION_COOKIE = "trainyard_session"
SIGN_IN_COOKIE = "trainyard_sign_in"
"""The state of a sign-in started at the provider, bound to the browser that started it."""
LIVE_INTERVAL_S = 2.0
"""How often a page's live parts are refreshed (server-sent events)."""
CONTROL_ACTIONS = ("pause", "activate", "kill")

templates = Jinja2Templates(directory=HERE / "templates")


class NotSignedIn(Exception):
    """A page was asked for without a live dashboard session."""


def _sessions(request: Request) -> DashboardSessions:
    return request.app.state.dashboard_sessions


def _service(request: Request) -> MasterService:
    return request.app.state.service


def _access(request: Request) -> Access:
    return request.app.state.access


def require_session(request: Request) -> WebSession:
    session = _sessions(request).find(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise NotSignedIn
    return session


SignedIn = Annotated[WebSession, Depends(require_session)]
Service = Annotated[MasterService, Depends(_service)]
Permissions = Annotated[Access, Depends(_access)]
router = APIRouter(include_in_schema=False)


def install_dashboard(
    app: FastAPI,
    *,
    login_token: str | None = None,
    oidc: OidcSpec | None = None,
    pools: PoolSource | None = None,
    default_share: float = 1.0,
) -> None:
    """Serve the dashboard on `app` (the Master's API app, which holds the service and the
    role checks). Sign-in by the printed link (`login_token`), the provider (`oidc`), or both;
    `pools` reports the executors' pools for the pools page, `default_share` is the share of
    a project that has none set (the server file's `shares.default_share`).
    """
    if login_token is None and oidc is None:
        raise ValueError("the dashboard needs a sign-in: a login token, an OIDC provider or both")
    app.state.dashboard_sessions = DashboardSessions(login_token)
    app.state.dashboard_oidc = OidcSignIn(oidc) if oidc is not None else None
    app.state.pool_source = pools
    app.state.default_share = default_share
    # ECharts and a thousand curves compress 3-5x (level 5: most of level 9's gain in a third
    # of its time); event streams are left alone by Starlette.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    @app.exception_handler(NotSignedIn)
    async def _sign_in_page(request: Request, _: NotSignedIn) -> Response:
        return _sign_in(request, status_code=401)


def _sign_in(request: Request, *, status_code: int, refused: str | None = None) -> Response:
    oidc = request.app.state.dashboard_oidc is not None
    context = {
        "refused": refused,
        "oidc": oidc,
        "link": _sessions(request).login_token is not None,
    }
    return templates.TemplateResponse(request, "signin.html", context, status_code=status_code)


def _page(request: Request, session: WebSession, name: str, **context: Any) -> HTMLResponse:
    csrf = _sessions(request).csrf_token(session.id)
    return templates.TemplateResponse(
        request, name, {"csrf": csrf, "user": session.user, **context}
    )


def _start_session(
    request: Request, user: UserPrincipal, *, same_site: Literal["strict", "lax"]
) -> Response:
    session = _sessions(request).open(user)
    response = RedirectResponse("/", status_code=303)  # any token leaves the address bar
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=int(SESSION_LIFETIME_S),
        httponly=True,
        samesite=same_site,
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/login")
    return response


@router.get("/login")
def login(request: Request, token: Annotated[str, Query(max_length=512)] = "") -> Response:
    """The sign-in page; with the printed link's token, a session as the local admin."""
    if not token:
        return _sign_in(request, status_code=200)
    if not _sessions(request).link_matches(token):
        return _sign_in(
            request, status_code=401, refused="That dashboard link is not this Master's."
        )
    user = request.app.state.authenticator.local_admin()
    return _start_session(request, user, same_site="strict")


@router.get("/login/oidc")
def login_oidc(request: Request) -> Response:
    """Send the browser to the provider, the state bound to this browser by a cookie."""
    oidc: OidcSignIn | None = request.app.state.dashboard_oidc
    if oidc is None:
        return _sign_in(request, status_code=404, refused="This Master has no identity provider.")
    try:
        url, state = oidc.start(str(request.url_for("login_callback")))
    except SignInRefused as refused:
        return _sign_in(request, status_code=503, refused=str(refused))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        SIGN_IN_COOKIE,
        state,
        max_age=int(SIGN_IN_WINDOW_S),
        path="/login",
        httponly=True,
        samesite="lax",  # it must come back on the provider's redirect
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login/callback")
def login_callback(
    request: Request,
    code: Annotated[str, Query(max_length=4096)] = "",
    state: Annotated[str, Query(max_length=512)] = "",
    error: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The provider sends the browser back here with a code; its access token is checked
    as the API checks bearer tokens, and names the session's user."""
    oidc: OidcSignIn | None = request.app.state.dashboard_oidc
    if oidc is None:
        return _sign_in(request, status_code=404, refused="This Master has no identity provider.")
    if error or not code or not state:
        reason = f"the identity provider answered {error!r}" if error else "no code came back"
        return _sign_in(request, status_code=401, refused=f"Sign-in failed: {reason}.")
    try:
        token = oidc.finish(
            state=state, cookie_state=request.cookies.get(SIGN_IN_COOKIE), code=code
        )
        user = request.app.state.authenticator.resolve(token)
    except (SignInRefused, TrainyardError) as refused:
        return _sign_in(request, status_code=401, refused=f"Sign-in failed: {refused}")
    if not isinstance(user, UserPrincipal):
        return _sign_in(request, status_code=401, refused="Sign-in failed: not a user's token.")
    return _start_session(request, user, same_site="lax")


@router.post("/logout")
def logout(request: Request, session: SignedIn, csrf: Annotated[str, Form()] = "") -> Response:
    _check_csrf(request, session, csrf)
    _sessions(request).close(session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def experiments(
    request: Request,
    session: SignedIn,
    service: Service,
    access: Permissions,
    state: ExperimentState | Literal[""] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    project: Annotated[str, Query(max_length=64)] = "",
    owner: Annotated[str, Query(max_length=255)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The experiments of the user's projects only (a facility admin's: all)."""
    listing = experiments_page(
        service,
        project_ids=access.visible_project_ids(session.user),
        filters=ExperimentFilters(state=state or None, query=q, project=project, owner=owner),
        page=page,
    )
    return _page(request, session, "experiments.html", listing=listing, states=ExperimentState)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment(
    request: Request,
    session: SignedIn,
    service: Service,
    access: Permissions,
    experiment_id: int,
):
    access.experiment(session.user, experiment_id, ProjectRole.VIEWER)
    view = experiment_view(service, experiment_id)
    may_control = _may(access, session.user, experiment_id)
    return _page(request, session, "experiment.html", view=view, may_control=may_control)


@router.get("/experiments/{experiment_id}/curves")
def experiment_curves(
    session: SignedIn,
    service: Service,
    access: Permissions,
    experiment_id: int,
    metric: Annotated[str, Query(min_length=1, max_length=200)],
) -> Response:
    """One validation metric's curves for every trial (the page loads the searcher's)."""
    access.experiment(session.user, experiment_id, ProjectRole.VIEWER)
    body = metric_curves(service, experiment_id, metric)
    return Response(body, media_type="application/json")


@router.get("/experiments/{experiment_id}/events")
async def experiment_events(
    request: Request,
    session: SignedIn,
    service: Service,
    access: Permissions,
    experiment_id: int,
) -> StreamingResponse:
    """Server-sent events: the trial table, re-rendered whenever it changes."""
    await run_in_threadpool(access.experiment, session.user, experiment_id, ProjectRole.VIEWER)

    async def stream() -> AsyncIterator[str]:
        last = ""
        while not await request.is_disconnected():
            started = time.monotonic()
            view = await run_in_threadpool(
                partial(experiment_view, panels=False), service, experiment_id
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
def pools(
    request: Request, session: SignedIn, service: Service, access: Permissions
) -> HTMLResponse:
    """Every pool's size and free slots; slots in use, queued trials and nodes of the user's
    projects only (a facility admin's: all)."""
    rows = _pool_rows(request, session, service, access)
    return _page(request, session, "pools.html", pools=rows)


@router.get("/pools/table", response_class=HTMLResponse)
def pools_table(
    request: Request, session: SignedIn, service: Service, access: Permissions
) -> HTMLResponse:
    """The pools' tables alone, which the page fetches again every LIVE_INTERVAL_S."""
    rows = _pool_rows(request, session, service, access)
    return templates.TemplateResponse(request, "_pools.html", {"pools": rows})


def _pool_rows(
    request: Request, session: WebSession, service: MasterService, access: Access
) -> list[PoolRow]:
    return pools_view(
        service,
        request.app.state.pool_source,
        project_ids=access.visible_project_ids(session.user),
        default_share=request.app.state.default_share,
    )


@router.get("/trials/{trial_id}", response_class=HTMLResponse)
def trial(
    request: Request, session: SignedIn, service: Service, access: Permissions, trial_id: int
):
    access.trial(session.user, trial_id, ProjectRole.VIEWER)
    view = trial_view(service, trial_id)
    return _page(request, session, "trial.html", view=view, log=log_tail(view.trial))


@router.get("/trials/{trial_id}/log", response_class=HTMLResponse)
def trial_log(
    request: Request, session: SignedIn, service: Service, access: Permissions, trial_id: int
):
    access.trial(session.user, trial_id, ProjectRole.VIEWER)
    return templates.TemplateResponse(
        request, "_log.html", {"log": log_tail(service.get_trial(trial_id))}
    )


@router.post("/experiments/{experiment_id}/{action}")
def control(
    request: Request,
    session: SignedIn,
    service: Service,
    access: Permissions,
    experiment_id: int,
    action: str,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(request, session, csrf)
    if action not in CONTROL_ACTIONS:
        raise TrainyardError(f"unknown action {action!r}; use {', '.join(CONTROL_ACTIONS)}")
    access.experiment(session.user, experiment_id, ProjectRole.EDITOR)
    service.control_experiment(experiment_id, action)
    return RedirectResponse(f"/experiments/{experiment_id}", status_code=303)


def _may(access: Access, user: UserPrincipal, experiment_id: int) -> bool:
    """Whether the page shows pause, activate and kill: the user is an editor or above."""
    try:
        access.experiment(user, experiment_id, ProjectRole.EDITOR)
    except PermissionDeniedError:
        return False
    return True


def _check_csrf(request: Request, session: WebSession, csrf: str) -> None:
    expected = _sessions(request).csrf_token(session.id)
    if not secrets.compare_digest(csrf.encode(), expected.encode()):
        raise PermissionDeniedError(
            "the form's CSRF token does not match this session; reload the page"
        )
