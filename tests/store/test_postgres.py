"""What only PostgreSQL can get wrong, and the test server the whole suite relies on.

Every other store test runs on PostgreSQL too (the `database_url` fixture in tests/conftest.py);
these check that those runs mean something: a real server, databases of their own, a session
time zone that is not UTC, and a server that stops without leaving a process behind.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from tests.postgres import (
    FOLDER_PREFIX,
    OWNER_FILE,
    SERVER_TIMEZONE,
    SERVER_USER,
    PostgresServer,
    remove_abandoned_folders,
    server_processes,
    start_server,
    stop_server,
)
from trainyard.store import create_experiment, get_experiment, open_store


def test_the_server_is_a_real_postgresql(postgres_server: PostgresServer) -> None:
    with postgres_server.connect() as connection:
        version = connection.execute("SELECT version()").fetchone()
    assert version is not None and version[0].startswith("PostgreSQL ")
    # /proc/PID belongs to the process's user: the server refuses root, so under root it runs
    # as the package's user.
    server_uid = Path(f"/proc/{postgres_server.pid}").stat().st_uid
    assert server_uid == (pwd.getpwnam(SERVER_USER).pw_uid if os.geteuid() == 0 else os.geteuid())


def test_each_test_gets_an_empty_database_of_its_own(
    postgres_server: PostgresServer, postgresql_url: str
) -> None:
    with open_store(postgresql_url) as store, store.engine.connect() as connection:
        database = connection.execute(text("SELECT current_database()")).scalar_one()
        assert database != "postgres"
        assert f"/{database}?" in postgresql_url
    with postgres_server.connect(database) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables is not None and tables[0] > 0


def test_times_are_utc_whatever_the_session_zone(postgresql_url: str) -> None:
    """The server's zone is not UTC, so timestamptz values come back in another zone; the
    store must still hand out the same instant in UTC."""
    when = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=UTC)
    with open_store(postgresql_url) as store:
        with store.engine.connect() as connection:
            zone = connection.execute(text("SHOW TimeZone")).scalar_one()
        assert zone == SERVER_TIMEZONE
        with store.session() as session:
            create_experiment(session, name="tz", config={}, home_dir="/r").ended_at = when
        with store.session() as session:
            loaded = get_experiment(session, "tz").ended_at
        with store.engine.connect() as connection:
            local = connection.execute(text("SELECT ended_at FROM ty_experiments")).scalar_one()
    assert local.utcoffset() != UTC.utcoffset(None)  # the raw value is in the server's zone
    assert loaded == when and loaded.tzinfo is UTC


def test_json_refuses_nan_so_the_store_must_encode_it(postgresql_url: str) -> None:
    """Why MetricValues stores NaN as a string: PostgreSQL's JSON has no NaN."""
    with (
        open_store(postgresql_url) as store,
        store.engine.connect() as connection,
        pytest.raises(DataError, match="json"),
    ):
        connection.execute(text("SELECT CAST('{\"loss\": NaN}' AS json)"))


def test_stopping_a_server_leaves_no_process() -> None:
    server = start_server()
    try:
        with server.connect() as connection:
            connection.execute("SELECT 1")
            running = server_processes(server)
    finally:
        stop_server(server)
    assert server.pid in running and len(running) > 2  # postmaster, a backend, its workers
    assert [pid for pid in running if Path(f"/proc/{pid}").exists()] == []
    assert not server.root.exists()
    with pytest.raises(psycopg.OperationalError):
        server.connect()


def test_folders_of_killed_runs_are_removed() -> None:
    """A run killed with SIGKILL cannot clean up; the next one removes what it left, and only
    that: the folder of a run still going stays."""
    ended = subprocess.Popen(["true"])
    ended.wait()  # reaped: its PID names no process now
    abandoned, live = (Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX)) for _ in range(2))
    (abandoned / OWNER_FILE).write_text(str(ended.pid))
    (live / OWNER_FILE).write_text(str(os.getpid()))
    try:
        remove_abandoned_folders()
        assert not abandoned.exists()
        assert live.exists()
    finally:
        shutil.rmtree(live)
