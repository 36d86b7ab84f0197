"""`trainyard server`: the shared Master of a facility (master/server_checks.py: its checks).

The API is served by uvicorn in a background thread; the main thread keeps SIGTERM and
SIGINT and runs the scheduling loop, so a stop signal pauses every experiment in order
(workers checkpoint) before the process exits, and the next start resumes them.

Several servers may share one PostgreSQL store: all of them answer the API, and only the
leader (master/leadership.py) ticks the loop. A leader that loses its lock abandons its
runners to the next leader; a stopping leader pauses its experiments first and only then
releases the lock, so the next leader resumes them from their checkpoints.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable

from fastapi import FastAPI

from trainyard.config.auth import AuthSpec
from trainyard.config.facility import load_facility
from trainyard.config.server import ServerConfig
from trainyard.master.api.app import create_app
from trainyard.master.cache_janitor import StagingCacheJanitor
from trainyard.master.facility_loop import FacilityLoop
from trainyard.master.leadership import Leadership, leadership_for
from trainyard.master.project_admin import ProjectAdmin
from trainyard.master.server import EmbeddedServer, new_token
from trainyard.master.server_checks import CheckedStore
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import Store
from trainyard.web.dashboard import install_dashboard
from trainyard.web.pools import PoolSlots, PoolSource
from trainyard.web.signin import write_link_file

logger = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "TRAINYARD_TOKEN"
ADMIN_TOKEN_FILE = "admin.token"
DASHBOARD_LINK_FILE = "dashboard.url"


def serve(
    config: ServerConfig,
    checked: CheckedStore,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; every experiment is paused in order first.

    `checked`: the database that passed `server_checks.open_checked`; closed on return.
    """
    try:
        facility = load_facility(config.facility)
        store = Store(checked.engine)
        settings = _settings(config)
        service = MasterService(store, settings)
        app = create_app(service, admin_token=admin_token(config), auth=config.auth)
        server = EmbeddedServer(
            app,
            host=config.host,
            port=config.port,
            advertised_host=settings.advertised_master_host(),
            tls=(config.tls.certificate, config.tls.key) if config.tls else None,
        )
    except BaseException:
        checked.close()
        raise
    loop = FacilityLoop(
        service=service,
        facility=facility,
        settings=settings,
        master_url=server.url,
        shares=config.shares,
    )
    app.state.submitter = loop
    app.state.project_admin = ProjectAdmin(store, loop.shares.disk, loop.pool_names())
    dashboard_link = _install_dashboard(app, config, pools=_pool_source(loop))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    janitor = StagingCacheJanitor.start_if_limited(settings)
    leadership = leadership_for(config.database_url, server_url=server.url)
    try:
        server.start()
        logger.info("trainyard server on %s, store %s", server.url, config.shown_database)
        logger.info("admin token: %s", _token_source(config))
        _announce_dashboard(server.url, dashboard_link, config)
        if on_ready is not None:
            on_ready(server.url)
        leading = False
        while not stop.is_set():
            leading = _lead_or_follow(loop, leadership, was_leading=leading)
            stop.wait(settings.poll_interval_s)
    finally:
        try:
            loop.stop()  # while the API still serves: workers report their checkpoints
        finally:
            leadership.close()  # after the pause: the next leader resumes what it paused
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if janitor is not None:
                janitor.stop()
            server.stop()
            service.tracking.close()
            checked.close()


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _lead_or_follow(loop: FacilityLoop, leadership: Leadership, *, was_leading: bool) -> bool:
    """One tick: schedule while leading; on losing the lead, leave the runners at once.
    Whether this server leads now."""
    if leadership.poll():
        loop.tick()
        return True
    if was_leading:
        loop.abandon()
    return False


def admin_token(config: ServerConfig) -> str:
    """TRAINYARD_TOKEN when set, else a token kept in <state_dir>/admin.token (only the
    server's user can read it), the same across restarts."""
    if os.environ.get(ADMIN_TOKEN_ENV):
        return os.environ[ADMIN_TOKEN_ENV]
    path = config.state_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        temporary = path.with_name(f".{ADMIN_TOKEN_FILE}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(token)
        try:  # replicas sharing the state folder: the first link wins, the others read it
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()


def _install_dashboard(app: FastAPI, config: ServerConfig, *, pools: PoolSource) -> str | None:
    """The dashboard at `/`: signed in through the provider; with `auth: none` (loopback
    only) by a link with a token of its own, as `trainyard run` prints. That token (None
    with a provider)."""
    if isinstance(config.auth, AuthSpec):
        install_dashboard(
            app, oidc=config.auth.oidc, pools=pools, default_share=config.shares.default_share
        )
        return None
    token = new_token()
    install_dashboard(
        app, login_token=token, pools=pools, default_share=config.shares.default_share
    )
    return token


def _pool_source(loop: FacilityLoop) -> PoolSource:
    """The pools page's view of the pools this server drives (a follower drives none)."""

    def report() -> list[PoolSlots]:
        return [
            PoolSlots(
                name=pool.name,
                executor=pool.executor_name,
                capacity=pool.capacity,
                free=pool.free(),
                node=socket.gethostname() if pool.executor_name == "local" else None,
            )
            for pool in loop.open_pools()
        ]

    return report


def _announce_dashboard(url: str, token: str | None, config: ServerConfig) -> None:
    """Where the dashboard is; its sign-in link goes to a file only the server's user can
    read, never to the log."""
    if token is None:
        logger.info("dashboard: %s/ (sign-in with the identity provider)", url)
        return
    path = config.state_dir / DASHBOARD_LINK_FILE
    write_link_file(path, f"{url}/login?token={token}")
    logger.info("dashboard: %s/ ; its sign-in link is in %s (readable only by you)", url, path)


def _token_source(config: ServerConfig) -> str:
    """Where the admin token comes from, for the operator (never the token itself)."""
    if os.environ.get(ADMIN_TOKEN_ENV):
        return f"{ADMIN_TOKEN_ENV} of the server's environment"
    return f"in {config.state_dir / ADMIN_TOKEN_FILE}; clients set {ADMIN_TOKEN_ENV} to it"


def _settings(config: ServerConfig) -> Settings:
    """The Master's settings: TRAINYARD_* variables for timing, the server file for the rest."""
    return Settings(
        home=config.storage_root,
        database_url=config.database_url.render_as_string(hide_password=False),
        facility=config.facility,
        master_host=config.host,
        master_advertise_host=config.advertise_host,
    )
