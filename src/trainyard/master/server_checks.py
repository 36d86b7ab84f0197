"""What `trainyard server` checks before it serves, and `trainyard server migrate`.

Start-up refuses, with what to do, rather than serve in a state it cannot keep: a database it
cannot reach, one written by an older trainyard (the operator migrates it, after a backup,
with `trainyard server migrate`; the server never upgrades on its own) or a newer one, a
second server on one SQLite file (only PostgreSQL can carry high availability), and
`auth: none` on an address other people can reach. This module imports no torch and no
Master, so a refusal comes in a second.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from trainyard.config.auth import is_loopback
from trainyard.config.server import ServerConfig
from trainyard.errors import TrainyardError
from trainyard.store.engine import make_engine
from trainyard.store.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)

CONNECT_TIMEOUT_S = 10


@dataclass
class CheckedStore:
    """A database that passed the checks, and the SQLite lock to hold while serving."""

    engine: Engine
    lock: IO[str] | None

    def close(self) -> None:
        self.engine.dispose()
        if self.lock is not None:
            self.lock.close()


def open_checked(config: ServerConfig, config_path: Path) -> CheckedStore:
    """Every start-up check, cheapest first.

    Raises:
        TrainyardError: the first check that fails, with what to do.
    """
    check_auth(config)
    lock = lock_sqlite(config)
    try:
        engine = connect(config)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    checked = CheckedStore(engine=engine, lock=lock)
    try:
        check_revision(engine, config, config_path)
    except BaseException:
        checked.close()
        raise
    return checked


@dataclass(frozen=True)
class Migration:
    """What `trainyard server migrate` did."""

    before: str | None
    after: str | None


def migrate(config: ServerConfig) -> Migration:
    """Bring the server's database to this trainyard's schema (`trainyard server migrate`)."""
    engine = connect(config)
    try:
        before = current_revision(engine)
        _refuse_newer(config, before)
        upgrade_to_head(engine)
        return Migration(before=before, after=current_revision(engine))
    finally:
        engine.dispose()


def check_auth(config: ServerConfig) -> None:
    """`auth: none` lets anyone who reaches the port act as an admin: loopback only."""
    if config.auth == "none" and not is_loopback(config.host):
        raise TrainyardError(
            f"server file: `auth: none` on host {config.host!r} would let anyone who reaches "
            "it run and kill experiments; listen on 127.0.0.1 (behind a reverse proxy that "
            "signs people in) or configure `auth: {oidc: ...}`"
        )


def lock_sqlite(config: ServerConfig) -> IO[str] | None:
    """An exclusive lock next to a SQLite store, held while the server runs; None on PostgreSQL.

    Raises:
        TrainyardError: another server holds it.
    """
    url = config.database_url
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    path = Path(f"{url.database}.server.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise TrainyardError(
            f"another trainyard server (pid {owner}) already serves {config.shown_database} "
            f"(it holds {path}); one SQLite file serves one server, and high availability "
            "(two servers on one store) needs PostgreSQL: stop that server, or give both "
            "servers' files the same `database: postgresql+psycopg://...` URL"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def connect(config: ServerConfig) -> Engine:
    """An engine on the server's database, after one query proved it answers.

    Raises:
        TrainyardError: the database cannot be reached; the URL is shown without its password.
    """
    url = _with_connect_timeout(config.database_url)
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        engine.dispose()
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        if url.password:
            reason = reason.replace(str(url.password), "***")
        raise TrainyardError(
            f"cannot reach the database {config.shown_database}: {reason} (one attempt, "
            f"{CONNECT_TIMEOUT_S} s timeout); check that the server runs, the host, port, "
            "user and password in `database`, and that it accepts connections from here"
        ) from None
    return engine


def check_revision(engine: Engine, config: ServerConfig, config_path: Path) -> None:
    """The database must have exactly this trainyard's schema: the server never migrates."""
    current, head = current_revision(engine), head_revision()
    _refuse_newer(config, current)
    if current != head:
        state = "has no trainyard tables yet" if current is None else f"is at revision {current}"
        raise TrainyardError(
            f"the database {config.shown_database} {state}; this trainyard needs revision "
            f"{head}. Back it up, then run `trainyard server migrate --config {config_path}`"
        )


def _refuse_newer(config: ServerConfig, current: str | None) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    if current is None or current in {script.revision for script in scripts.walk_revisions()}:
        return
    raise TrainyardError(
        f"the database {config.shown_database} is at revision {current}, which this trainyard "
        f"does not know (its newest is {head_revision()}): a newer trainyard wrote it; run "
        "that version, or restore a backup taken before the upgrade"
    )


def _with_connect_timeout(url: URL) -> URL:
    if url.get_backend_name() != "postgresql" or "connect_timeout" in url.query:
        return url
    return url.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
