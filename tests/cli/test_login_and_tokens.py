"""`trainyard login` and `trainyard token ...` against a real Master over HTTP and a real
provider process: the device grant, the 0600 credentials file, refresh, and tokens."""

from __future__ import annotations

import json
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.auth.tokens import AUDIENCE, mint
from trainyard.cli.app import app
from trainyard.config.auth import AuthSpec, OidcSpec
from trainyard.master.api.app import create_app
from trainyard.master.server import EmbeddedServer
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import open_store

runner = CliRunner()


@pytest.fixture(scope="module")
def master(oidc_issuer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Master with sign-in, served over HTTP on 127.0.0.1."""
    settings = Settings(home=tmp_path_factory.mktemp("master") / "home")
    store = open_store(settings.resolved_database_url())
    auth = AuthSpec(oidc=OidcSpec(issuer=oidc_issuer, audience=AUDIENCE))
    server = EmbeddedServer(create_app(MasterService(store, settings), auth=auth))
    server.start()
    yield server.url
    server.stop()
    store.close()


def trainyard(*args: str, token: str | None = None, config: Path | None = None) -> Result:
    env = {"TRAINYARD_TOKEN": token, "TRAINYARD_MASTER": None}
    if config is not None:
        env["XDG_CONFIG_HOME"] = str(config)
    return runner.invoke(app, list(args), env=env)


def test_tokens_are_created_listed_and_revoked(master: str, oidc_issuer: str) -> None:
    jwt = mint(oidc_issuer, "sub-dana", username="dana")
    created = trainyard("token", "create", "ci", "--days", "7", "--master", master, token=jwt)
    assert created.exit_code == 0, created.output
    secret = created.output.split()[0]
    assert secret.startswith("typat_") and "it is not shown again" in created.output
    listed = trainyard("token", "list", "--master", master, token=secret)
    assert "ci" in listed.output and "active" in listed.output and secret not in listed.output
    found = re.search(r"token (\d+) \(ci\) expires", created.output)
    assert found is not None, created.output
    token_id = found[1]
    revoked = trainyard("token", "revoke", token_id, "--master", master, token=jwt)
    assert f"revoked token {token_id} (ci)" in revoked.output
    refused = trainyard("token", "list", "--master", master, token=secret)
    assert "API token 'ci' (typat_" in str(refused.exception)
    assert "was revoked at" in str(refused.exception)


def test_bad_requests_come_back_with_the_masters_message(master: str, oidc_issuer: str) -> None:
    jwt = mint(oidc_issuer, "sub-dana")
    too_long = trainyard("token", "create", "x", "--days", "999", "--master", master, token=jwt)
    assert "999 days is over this Master's maximum of 365" in str(too_long.exception)
    nowhere = trainyard("token", "list", token=jwt)
    assert "no Master to talk to: pass --master URL or set TRAINYARD_MASTER" in str(
        nowhere.exception
    )


def _approve_when_asked(issuer: str, subject: str) -> threading.Thread:
    """Play the user who opens the verification page and signs in."""

    def approve() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = httpx.post(f"{issuer}/device/approve", json={"sub": subject}, timeout=10)
            if answer.json()["approved"]:
                return
            time.sleep(0.1)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread


def test_login_keeps_tokens_only_the_user_can_read_and_refreshes_them(
    master: str, oidc_issuer: str, tmp_path: Path
) -> None:
    approver = _approve_when_asked(oidc_issuer, "sub-erin")
    login = trainyard("login", "--master", master, config=tmp_path)
    approver.join(timeout=30)
    assert login.exit_code == 0, login.output
    assert f"Open {oidc_issuer}/device/verify?user_code=" in login.output
    stored = tmp_path / "trainyard" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    me = trainyard("token", "list", "--master", master, config=tmp_path)
    assert me.exit_code == 0, me.output
    # Every command that talks to the Master sends the stored sign-in, not only `token`.
    listed = trainyard("list", "--master", master, config=tmp_path)
    assert listed.exit_code == 0, listed.output
    unknown = trainyard("show", "nothing-here", "--master", master, config=tmp_path)
    assert "no experiment" in str(unknown.exception).lower(), unknown.output

    logins = json.loads(stored.read_text())
    first = logins[master]["access_token"]
    logins[master]["expires_at"] = time.time() - 1
    stored.write_text(json.dumps(logins))
    renewed = trainyard("token", "create", "after-refresh", "--master", master, config=tmp_path)
    assert renewed.exit_code == 0, renewed.output
    assert json.loads(stored.read_text())[master]["access_token"] != first


def test_login_to_a_master_without_sign_in_says_so(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with open_store(settings.resolved_database_url()) as store:
        server = EmbeddedServer(create_app(MasterService(store, settings)))
        server.start()
        try:
            result = trainyard("login", "--master", server.url, config=tmp_path)
        finally:
            server.stop()
    assert f"the Master at {server.url} needs no sign-in (auth: none)" in str(result.exception)
