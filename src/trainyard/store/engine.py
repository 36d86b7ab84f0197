"""Where the store lives and how to connect to it.

SQLite in WAL mode is the embedded default: readers never block the single writer, and the
busy timeout makes concurrent writers (Master threads, other processes) wait instead of
failing with "database is locked".
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from trainyard.store.migrate import upgrade_to_head

HOME_ENV = "TRAINYARD_HOME"
DATABASE_FILE = "trainyard.db"

BUSY_TIMEOUT_MS = 5000
SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    # NORMAL is durable across process crashes in WAL mode; only power loss can drop the
    # last commits, and it saves an fsync per transaction.
    "PRAGMA synchronous=NORMAL",
)


def default_home() -> Path:
    """$TRAINYARD_HOME, else `.trainyard` in the working directory."""
    return Path(os.environ.get(HOME_ENV) or ".trainyard")


def default_database_url(home: Path) -> str:
    return f"sqlite:///{home / DATABASE_FILE}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder created and the PRAGMAs on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Sessions are used from Master threads and request handlers, not only where created.
    # The driver's default transaction handling is kept on purpose: it begins a transaction
    # at the first write, so a read-then-write unit of work takes the write lock (and waits
    # for it) at that write instead of failing on a stale read snapshot.
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _apply_sqlite_pragmas)
    return engine


def _apply_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL (a no-op once it is), retrying while the file is locked.

    Connections switching a fresh file at the same moment can get "database is locked" at once:
    SQLite's deadlock avoidance skips the busy timeout there, so we wait ourselves.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (callers use them after the block)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


class Store:
    """An open store: the engine plus the session factory bound to it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessionmaker = make_session_factory(engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commits when the block succeeds, rolls back when it raises."""
        with self.sessionmaker.begin() as session:
            yield session

    def close(self) -> None:
        """Close every pooled connection (SQLite then checkpoints the WAL file)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url!r})"


def open_store(url: str) -> Store:
    """Connect and migrate to the newest schema, so every process sees the same tables."""
    engine = make_engine(url)
    try:
        upgrade_to_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
