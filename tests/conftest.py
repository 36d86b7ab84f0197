"""Fixtures every test folder can use: a fresh store database on SQLite and on PostgreSQL.

A test that takes `database_url` (or `store`, an opened and migrated `Store` on it) runs twice,
once per backend, each time on a database of its own:

- `sqlite`: a file in a folder that does not exist yet, as a fresh $TRAINYARD_HOME would be;
- `postgresql`: a new database on the session's PostgreSQL server (tests/postgres.py), created
  for the test and dropped after it, even if connections to it are still open.

Take `sqlite_url` or `postgresql_url` instead for a test about one backend. Without PostgreSQL's
binaries the PostgreSQL cases skip with the reason, except under CI=true, where they fail:
`make test` installs them, so CI never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oidc_provider import provider_process
from tests.postgres import PostgresServer, PostgresUnavailable, start_server, stop_server
from trainyard.store import Store, open_store

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started on first use."""
    try:
        server = start_server()
    except PostgresUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {error}", pytrace=False)
        pytest.skip(str(error))
    yield server
    stop_server(server)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store URL in a folder that does not exist yet."""
    return f"sqlite:///{tmp_path / 'home' / 'trainyard.db'}"


@pytest.fixture
def postgresql_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of its own on the session's server; dropped after the test."""
    name = f"trainyard_test_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    with postgres_server.connect() as admin:
        # FORCE: engines a test left open (Optuna keeps its own) must not keep the database.
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty store database, once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """An opened store, migrated to the newest schema, on each backend."""
    opened = open_store(database_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[str]:
    """A real OIDC provider process on 127.0.0.1 (tests/oidc_provider.py) for the session;
    its issuer URL."""
    with provider_process() as issuer:
        yield issuer
