"""`trainyard server` on a real PostgreSQL: two experiments submitted from the CLI finish."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server_process import ServerProcess, check_two_experiments_finish
from tests.postgres import PostgresServer


@pytest.fixture(scope="module")
def server(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    name = f"trainyard_server_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    process = ServerProcess(tmp_path_factory.mktemp("pg-server"), postgres_server.url(name))
    process.start()
    yield process
    assert process.stop() == 0, process.log.read_text()
    with postgres_server.connect() as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_two_submitted_experiments_finish(
    server: ServerProcess, toy_data: Path, tmp_path: Path
) -> None:
    check_two_experiments_finish(server, toy_data, tmp_path / "experiments")
