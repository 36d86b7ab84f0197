"""Which `trainyard server` schedules, when several share one PostgreSQL store.

Every replica answers the API; exactly one, the leader, runs the scheduling loop (starts
runners, launches workers). The leader is whoever holds a session-level PostgreSQL advisory
lock (`LOCK_KEY`) on a connection of its own that it keeps open. PostgreSQL frees such a
lock when the session ends, so when a leader dies its lock goes with it:

- SIGKILL, a crash, a stopped container: the kernel closes the socket, PostgreSQL ends the
  session at once and the next follower tick takes the lock.
- A vanished host or a cut network: nothing closes the socket. The lock connection asks the
  server for TCP keepalives (`KEEPALIVE_*`, about 11 s until PostgreSQL drops the session) and
  its own side does the same, so both ends give up on a dead peer in about the same time.

Followers try the lock every tick (`pg_try_advisory_lock` never waits). A leader checks
every tick that its lock connection still holds the lock; when it does not, it stops
scheduling at once and becomes a follower (master/facility_loop.py `abandon`). Advisory
locks belong to one database, so two facilities on one PostgreSQL server do not interfere.

Who leads is visible to everyone: the lock connection's `application_name` names the
server's pid and URL, and `holder` reads it back from `pg_locks` and `pg_stat_activity`.

On SQLite there is no election: `SoleLeadership` always leads, and the file lock of
master/server_checks.py (`lock_sqlite`) refuses a second server on the same file.
"""

from __future__ import annotations

import contextlib
import logging
import os

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

LOCK_KEY = int.from_bytes(b"trainyrd", "big")
"""The advisory lock's 64-bit key: the ASCII bytes of "trainyrd", big-endian
(8390876161197568612). `pg_locks` shows it as classid 1953653097, objid 1853452900."""

KEEPALIVE_IDLE_S = 5
"""Seconds of silence on the lock connection before TCP probes start (both ends)."""
KEEPALIVE_INTERVAL_S = 2
"""Seconds between probes."""
KEEPALIVE_COUNT = 3
"""Unanswered probes after which the connection, and with it the lock, is dropped."""
CONNECT_TIMEOUT_S = 10
"""A follower's attempt to reach PostgreSQL gives up after this long (and retries next tick)."""
STATEMENT_TIMEOUT_MS = 5000
"""A check of the lock that takes longer than this counts as losing it."""
APPLICATION_NAME_BYTES = 63
"""PostgreSQL keeps at most NAMEDATALEN - 1 bytes of an application_name."""


class Leadership:
    """Whether this server schedules. This base class is the SQLite case: it always leads."""

    def poll(self) -> bool:
        """Called every tick: True while this server leads."""
        return True

    def holder(self) -> str | None:
        """Who leads, as the leader names itself; None when nobody does."""
        return None

    def close(self) -> None:
        """Give up leading (a follower may take over at once)."""


class AdvisoryLeadership(Leadership):
    """Leads while a PostgreSQL advisory lock is held on a dedicated connection.

    Not thread-safe: the server's main thread calls `poll` and `close`.
    """

    def __init__(self, url: URL, *, identity: str) -> None:
        """`url`: the store's database; `identity`: how others see this server (its pid and
        URL), kept as the lock connection's application_name."""
        self._identity = _application_name(identity)
        self._engine: Engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": self._identity,
                "connect_timeout": CONNECT_TIMEOUT_S,
                # The client's side: notice a dead PostgreSQL host, and abort a write that is
                # never acknowledged, instead of waiting on the socket for minutes.
                "keepalives": 1,
                "keepalives_idle": KEEPALIVE_IDLE_S,
                "keepalives_interval": KEEPALIVE_INTERVAL_S,
                "keepalives_count": KEEPALIVE_COUNT,
                "tcp_user_timeout": _keepalive_window_s() * 1000,
            },
        )
        self._connection: Connection | None = None
        self._leading = False
        self._shown: str | None = None
        """The last follower's line logged: repeated only when it changes, not every tick."""

    @property
    def identity(self) -> str:
        """This server's name in `pg_stat_activity` (cut to what PostgreSQL keeps)."""
        return self._identity

    def poll(self) -> bool:
        try:
            if self._leading:
                self._leading = self._still_held()
                if not self._leading:
                    logger.error(
                        "no longer leading: the lock connection to PostgreSQL no longer holds "
                        "advisory lock %d; scheduling stopped, another server takes over",
                        LOCK_KEY,
                    )
                    self._disconnect()
            else:
                self._leading = self._try_lock()
        except SQLAlchemyError as err:
            if self._leading:
                logger.error(
                    "no longer leading: the lock connection to PostgreSQL failed (%s); "
                    "scheduling stopped, another server takes over",
                    _first_line(err),
                )
            else:
                self._say(
                    logging.WARNING, f"following: cannot reach PostgreSQL ({_first_line(err)})"
                )
            self._leading = False
            self._disconnect()
        return self._leading

    def holder(self) -> str | None:
        """The leader's application_name, read through this server's lock connection."""
        try:
            connection = self._connect()
            return connection.execute(_HOLDER, _key_parts()).scalar()
        except SQLAlchemyError:
            self._disconnect()
            return None

    def close(self) -> None:
        """Closing the session frees the lock: a follower takes it on its next tick."""
        self._leading = False
        self._disconnect()
        self._engine.dispose()

    # -- helpers ------------------------------------------------------------------------------

    def _try_lock(self) -> bool:
        connection = self._connect()
        if connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}
        ).scalar():
            logger.info(
                "leading: this server (%s) holds advisory lock %d", self._identity, LOCK_KEY
            )
            self._shown = None
            return True
        holder = connection.execute(_HOLDER, _key_parts()).scalar()
        self._say(logging.INFO, f"following (leader is {holder or 'being replaced'})")
        return False

    def _say(self, level: int, line: str) -> None:
        if line != self._shown:
            logger.log(level, "%s", line)
            self._shown = line

    def _still_held(self) -> bool:
        connection = self._connect()
        return bool(connection.execute(_HELD_HERE, _key_parts()).scalar())

    def _connect(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                # The server's side: PostgreSQL drops this session (and frees the lock)
                # soon after this host stops answering. Ignored on a unix socket.
                connection.execute(text(f"SET tcp_keepalives_idle = {KEEPALIVE_IDLE_S}"))
                connection.execute(text(f"SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL_S}"))
                connection.execute(text(f"SET tcp_keepalives_count = {KEEPALIVE_COUNT}"))
                connection.execute(text(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):  # broken already: nothing to release
                self._connection.close()
            self._connection = None


_LOCK_ROWS = """
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.classid = :classid AND l.objid = :objid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_HOLDER = text(
    "SELECT a.application_name FROM pg_stat_activity a WHERE a.pid IN (SELECT l.pid"
    + _LOCK_ROWS
    + ")"
)
_HELD_HERE = text("SELECT count(*) > 0" + _LOCK_ROWS + " AND l.pid = pg_backend_pid()")


def _key_parts() -> dict[str, int]:
    """The lock key as pg_locks shows a bigint advisory key: high and low 32 bits."""
    return {"classid": LOCK_KEY >> 32, "objid": LOCK_KEY & 0xFFFFFFFF}


def _keepalive_window_s() -> int:
    return KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT


def _application_name(identity: str) -> str:
    encoded = identity.encode("ascii", "replace")[:APPLICATION_NAME_BYTES]
    return encoded.decode("ascii")


def server_identity(url: str) -> str:
    """How a server names itself to the others: `trainyard pid <pid> <url>`."""
    return f"trainyard pid {os.getpid()} {url}"


def _first_line(err: SQLAlchemyError) -> str:
    return str(getattr(err, "orig", None) or err).strip().splitlines()[0]


def leadership_for(url: URL, *, server_url: str) -> Leadership:
    """An election on PostgreSQL; on SQLite the one server leads."""
    if url.get_backend_name() == "postgresql":
        return AdvisoryLeadership(url, identity=server_identity(server_url))
    return Leadership()
