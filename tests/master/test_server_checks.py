"""What `trainyard server` refuses at start-up, on a real SQLite file and a real PostgreSQL,
and what `trainyard server migrate` reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from trainyard.config.server import ServerConfig, parse_server_config
from trainyard.errors import TrainyardError
from trainyard.master.server_checks import (
    check_auth,
    connect,
    lock_sqlite,
    migrate,
    open_checked,
)
from trainyard.store import alembic_config, head_revision, make_engine
from trainyard.store.models import VERSION_TABLE

CONFIG_PATH = Path("/etc/trainyard/server.yaml")
OIDC = {"oidc": {"issuer": "https://idp.example.org", "audience": "trainyard"}}


def _config(tmp_path: Path, **raw: object) -> ServerConfig:
    return parse_server_config(raw, base_dir=tmp_path)


def test_an_empty_database_is_refused_until_migrated(database_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, database=database_url)
    with pytest.raises(TrainyardError) as caught:
        open_checked(config, CONFIG_PATH)
    assert f"has no trainyard tables yet; this trainyard needs revision {head_revision()}" in (
        str(caught.value)
    )
    assert f"run `trainyard server migrate --config {CONFIG_PATH}`" in str(caught.value)
    done = migrate(config)
    assert (done.before, done.after) == (None, head_revision())
    open_checked(config, CONFIG_PATH).close()


def test_an_older_database_is_refused_and_never_upgraded(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.commit()
    config = _config(tmp_path, database=sqlite_url)
    with pytest.raises(TrainyardError, match="is at revision 0001; this trainyard needs"):
        open_checked(config, CONFIG_PATH)
    with engine.connect() as connection:
        version = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    assert version == "0001"
    assert migrate(config).before == "0001"


def test_a_newer_database_is_refused(postgresql_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, database=postgresql_url)
    migrate(config)
    engine = make_engine(postgresql_url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    for attempt in (lambda: open_checked(config, CONFIG_PATH), lambda: migrate(config)):
        with pytest.raises(TrainyardError) as caught:
            attempt()
        assert "is at revision 9999, which this trainyard does not know" in str(caught.value)
        assert "a newer trainyard wrote it" in str(caught.value)


def test_unreachable_postgresql_names_the_url_without_its_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://trainyard:s3cret@127.0.0.1:1/trainyard"  # nothing listens
    with pytest.raises(TrainyardError) as caught:
        connect(_config(tmp_path, database=url))
    message = str(caught.value)
    assert message.startswith(
        "cannot reach the database postgresql+psycopg://trainyard:***@127.0.0.1:1/trainyard: "
    )
    assert "port 1 failed: Connection refused" in message  # the driver's reason
    assert "(one attempt, 10 s timeout)" in message
    assert "s3cret" not in message


def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = lock_sqlite(config)
    assert first is not None
    try:
        with pytest.raises(TrainyardError) as caught:
            lock_sqlite(config)
        message = str(caught.value)
        assert f"another trainyard server (pid {os.getpid()}) already serves sqlite:///" in (
            message
        )
        assert "one SQLite file serves one server" in message
        assert "high availability (two servers on one store) needs PostgreSQL" in message
        assert "the same `database: postgresql+psycopg://...` URL" in message
    finally:
        first.close()
    lock_sqlite(config).close()  # released with the first server


def test_auth_none_is_for_loopback_only(tmp_path: Path) -> None:
    check_auth(_config(tmp_path, host="127.0.0.1"))
    check_auth(_config(tmp_path, host="0.0.0.0", auth=OIDC))
    with pytest.raises(TrainyardError) as caught:
        check_auth(_config(tmp_path, host="0.0.0.0"))
    assert "`auth: none` on host '0.0.0.0' would let anyone who reaches it" in str(caught.value)


def test_the_admin_token_is_kept_for_the_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainyard.master.facility_server import admin_token

    config = _config(tmp_path)
    monkeypatch.delenv("TRAINYARD_TOKEN", raising=False)
    token = admin_token(config)
    path = config.state_dir / "admin.token"
    assert (path.read_text(), path.stat().st_mode & 0o777) == (token, 0o600)
    assert admin_token(config) == token  # the same across restarts
    monkeypatch.setenv("TRAINYARD_TOKEN", "from-the-environment")
    assert admin_token(config) == "from-the-environment"
