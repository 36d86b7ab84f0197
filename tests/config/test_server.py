"""The server file: defaults, relative paths, and the message each mistake gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainyard.config.auth import AuthSpec
from trainyard.config.server import DEFAULT_PORT, load_server_config
from trainyard.errors import ConfigError


def _write(folder: Path, raw: object) -> Path:
    path = folder / "server.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _problems(folder: Path, raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_server_config(_write(folder, raw))
    return str(caught.value)


def test_defaults_are_a_loopback_sqlite_server_next_to_the_file(tmp_path: Path) -> None:
    config = load_server_config(_write(tmp_path, {}))
    assert (config.host, config.port, config.auth, config.tls) == (
        "127.0.0.1",
        DEFAULT_PORT,
        "none",
        None,
    )
    assert config.state_dir == tmp_path / "state"
    assert config.storage_root == tmp_path / "state"
    assert config.shown_database == f"sqlite:///{tmp_path / 'state' / 'trainyard.db'}"


def test_relative_paths_are_taken_against_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "pools.yaml").write_text("pools: {default: {}}\n")
    config = load_server_config(
        _write(
            tmp_path,
            {"database": "sqlite:///db/t.db", "facility": "pools.yaml", "storage": "exp"},
        )
    )
    assert config.facility == tmp_path / "pools.yaml"
    assert config.storage_root == tmp_path / "exp"
    assert config.database_url.database == str(tmp_path / "db" / "t.db")


def test_the_password_is_masked_and_never_in_messages(tmp_path: Path) -> None:
    url = "postgresql+psycopg://trainyard:s3cret@db.example.org:5432/trainyard"
    config = load_server_config(_write(tmp_path, {"database": url}))
    assert (
        config.shown_database == "postgresql+psycopg://trainyard:***@db.example.org:5432/trainyard"
    )
    assert config.database_url.password == "s3cret"
    message = _problems(tmp_path, {"database": "mysql://u:s3cret@h/d"})
    assert "`database`: driver 'mysql' is not supported; use sqlite or postgresql+psycopg" in (
        message
    )
    assert "s3cret" not in message


def test_misspelt_keys_get_did_you_mean_with_their_key_path(tmp_path: Path) -> None:
    message = _problems(
        tmp_path,
        {
            "prot": 80,
            "tls": {"certificate": "c.pem", "kee": "k.pem"},
            "auth": {"oidc": {"issuer": "https://idp.example.org", "audiance": "x"}},
        },
    )
    assert "`prot`: unknown key 'prot'; did you mean 'port'?" in message
    assert "`tls.kee`: unknown key 'kee'; did you mean 'key'?" in message
    assert "`auth.oidc.audiance`: unknown key 'audiance'; did you mean 'audience'?" in message


def test_auth_is_none_or_an_oidc_section(tmp_path: Path) -> None:
    assert "`auth`: 'none ' is not allowed; did you mean 'none'?" in _problems(
        tmp_path, {"auth": "none "}
    )
    config = load_server_config(
        _write(tmp_path, {"auth": {"oidc": {"issuer": "https://i.example.org", "audience": "a"}}})
    )
    assert isinstance(config.auth, AuthSpec)


def test_missing_tls_and_facility_files_are_named(tmp_path: Path) -> None:
    message = _problems(
        tmp_path, {"facility": "nope.yaml", "tls": {"certificate": "c.pem", "key": "k.pem"}}
    )
    assert f"`facility`: no such file: {tmp_path / 'nope.yaml'}" in message
    assert f"`tls.certificate`: no such file: {tmp_path / 'c.pem'}" in message
    assert f"`tls.key`: no such file: {tmp_path / 'k.pem'}" in message


def test_a_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file: .*absent.yaml \(from --config\)"):
        load_server_config(tmp_path / "absent.yaml")
    (tmp_path / "server.yaml").write_text("port: [\n")
    with pytest.raises(ConfigError, match="not valid YAML: line"):
        load_server_config(tmp_path / "server.yaml")
    assert "the top level must be a mapping" in _problems(tmp_path, [1])


def test_shares_have_defaults_and_checked_values(tmp_path: Path) -> None:
    shares = load_server_config(_write(tmp_path, {})).shares
    assert (shares.half_life_hours, shares.default_share, shares.preemption.enabled) == (
        168.0,
        1.0,
        False,
    )
    message = _problems(
        tmp_path,
        {"shares": {"half_life_hours": 0, "preemption": {"enabled": True, "min_run_minute": 5}}},
    )
    assert "`shares.half_life_hours`: " in message and "greater than 0" in message
    assert (
        "`shares.preemption.min_run_minute`: unknown key 'min_run_minute'; did you mean "
        "'min_run_minutes'?" in message
    )
