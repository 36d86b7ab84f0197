"""`trainyard admin ...` against a real Master over HTTP with a real provider process: a
facility admin creates and sets projects and manages members; anyone else is refused."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.auth.tokens import AUDIENCE, mint
from trainyard.cli.admin import parse_size
from trainyard.cli.app import app
from trainyard.config.auth import AuthSpec, OidcSpec
from trainyard.errors import TrainyardError
from trainyard.master.api.app import create_app
from trainyard.master.server import EmbeddedServer
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import open_store

runner = CliRunner()


@pytest.fixture(scope="module")
def master(oidc_issuer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(home=tmp_path_factory.mktemp("admin") / "home")
    store = open_store(settings.resolved_database_url())
    auth = AuthSpec(
        oidc=OidcSpec(issuer=oidc_issuer, audience=AUDIENCE), facility_admins=("sub-root",)
    )
    server = EmbeddedServer(create_app(MasterService(store, settings), auth=auth))
    server.start()
    yield server.url
    server.stop()
    store.close()


def trainyard(master: str, token: str, *args: str) -> Result:
    return runner.invoke(app, [*args, "--master", master], env={"TRAINYARD_TOKEN": token})


def test_a_facility_admin_creates_sets_shows_and_lists_projects(
    master: str, oidc_issuer: str
) -> None:
    root = mint(oidc_issuer, "sub-root", username="root")
    created = trainyard(
        master, root, "admin", "project", "create", "alpha", "--share", "2",
        "--max-concurrent-trials", "4", "--disk-cap", "1GiB", "--pools", "default",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "created project alpha" in created.output
    assert "max concurrent trials" in created.output and "│ 4" in created.output
    assert "0 B of 1.0 GiB" in created.output
    changed = trainyard(
        master, root, "admin", "project", "set", "alpha", "--priority", "1", "--clear", "share"
    )
    assert changed.exit_code == 0, changed.output
    shown = trainyard(master, root, "admin", "project", "show", "alpha")
    assert "default (server file's shares.default_share)" in shown.output
    assert "priority" in shown.output and "│ 1 " in shown.output
    listed = trainyard(master, root, "admin", "project", "list")
    assert "alpha" in listed.output and "default" in listed.output


def test_members_are_added_and_removed_by_name(master: str, oidc_issuer: str) -> None:
    root = mint(oidc_issuer, "sub-root", username="root")
    dana = mint(oidc_issuer, "sub-dana", username="dana")
    httpx.get(
        f"{master}/api/v1/me", headers={"Authorization": f"Bearer {dana}"}
    ).raise_for_status()
    assert trainyard(master, root, "admin", "project", "create", "beta").exit_code == 0
    added = trainyard(master, root, "admin", "member", "add", "beta", "dana", "--role", "viewer")
    assert "dana is viewer of beta" in added.output, added.output
    assert "sub-dana" in trainyard(master, root, "admin", "project", "show", "beta").output
    removed = trainyard(master, root, "admin", "member", "remove", "beta", "dana")
    assert "removed dana from beta" in removed.output, removed.output
    assert "sub-dana" not in trainyard(master, root, "admin", "project", "show", "beta").output


def test_mistakes_and_other_callers_get_messages(master: str, oidc_issuer: str) -> None:
    root = mint(oidc_issuer, "sub-root", username="root")
    erin = mint(oidc_issuer, "sub-erin", username="erin")
    refused = trainyard(master, erin, "admin", "project", "list")
    assert "erin is not a facility admin; managing projects, shares and quotas" in (
        str(refused.exception)
    )
    unknown = trainyard(master, root, "admin", "project", "show", "alpah")
    assert "no project named 'alpah'" in str(unknown.exception)
    nothing = trainyard(master, root, "admin", "project", "set", "alpha")
    assert "nothing to set: give at least one of --share" in str(nothing.exception)
    misspelt = trainyard(master, root, "admin", "project", "set", "alpha", "--clear", "shar")
    assert "--clear shar: not a setting; did you mean 'share'?" in str(misspelt.exception)
    negative = trainyard(master, root, "admin", "project", "set", "alpha", "--max-slots", "-1")
    assert "max_slots" in str(negative.exception)


def test_sizes_take_binary_and_decimal_units() -> None:
    assert parse_size("500GiB") == 500 * 2**30
    assert parse_size("2TB") == 2 * 10**12
    assert parse_size("1024") == 1024
    with pytest.raises(TrainyardError, match="'lots' is not a size; write a number with a unit"):
        parse_size("lots")
