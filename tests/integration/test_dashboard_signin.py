"""The facility's dashboard: sign-in with the provider (authorization code + PKCE) and what
each user may see and do, in a real Chromium against a real provider process.

Two projects: alice edits `higgs`, bob views `btag`. Each sees only their project's
experiments, by page and by guessing addresses; only an editor gets, and may use, the
buttons. The sign-in itself is attacked without a browser: a forged state, a state from
another browser, a replayed code, a provider that says no.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.integration.helpers import experiment
from trainyard.config import parse_experiment
from trainyard.config.auth import AuthSpec, OidcSpec
from trainyard.master.api.app import create_app
from trainyard.master.server import EmbeddedServer
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, ProjectRole
from trainyard.settings import Settings
from trainyard.store import accounts, open_store
from trainyard.web.dashboard import SESSION_COOKIE, SIGN_IN_COOKIE, install_dashboard

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "dashboard"


@dataclass
class Facility:
    url: str
    issuer: str
    service: MasterService
    higgs_id: int
    btag_id: int
    btag_trial: int


@pytest.fixture(scope="module")
def facility(oidc_issuer: str, toy_data: Path, tmp_path_factory) -> Iterator[Facility]:
    settings = Settings(home=tmp_path_factory.mktemp("facility") / "home")
    store = open_store(settings.resolved_database_url())
    service = MasterService(store, settings)
    with store.session() as session:
        ids = {}
        for name, project_name, role in (
            ("alice", "higgs", ProjectRole.EDITOR),
            ("bob", "btag", ProjectRole.VIEWER),
        ):
            user = accounts.sign_in_user(session, issuer=oidc_issuer, subject=name, username=name)
            project = accounts.create_project(session, name=project_name)
            accounts.set_membership(session, project_id=project.id, user_id=user.id, role=role)
            ids[project_name] = (project, user.id)
        session.commit()
        created = {
            name: service.create_experiment(
                parse_experiment(experiment(toy_data, name=f"{name}-search")),
                project=project,
                owner_id=owner,
            )
            for name, (project, owner) in ids.items()
        }
    for experiment_id in created.values():
        service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
        service.create_trials(experiment_id, num_free=1)
    spec = OidcSpec(issuer=oidc_issuer, audience="trainyard")
    app = create_app(service, auth=AuthSpec(oidc=spec))
    install_dashboard(app, oidc=spec)
    server = EmbeddedServer(app)
    server.start()
    try:
        yield Facility(
            url=server.url,
            issuer=oidc_issuer,
            service=service,
            higgs_id=created["higgs"],
            btag_id=created["btag"],
            btag_trial=service.list_trials(created["btag"])[0].id,
        )
    finally:
        server.stop()
        store.close()


def _signs_in_as(issuer: str, subject: str | None) -> None:
    httpx.post(f"{issuer}/authorize/as", json={"sub": subject}, timeout=10).raise_for_status()


def _sign_in(browser: Browser, facility: Facility, subject: str) -> Page:
    """A browser that signed in through the provider's page as `subject`."""
    _signs_in_as(facility.issuer, subject)
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{facility.url}/experiments/{facility.higgs_id}")  # not signed in yet
    assert "Sign in" in page.content()
    page.click("#sign-in")
    page.wait_for_url(f"{facility.url}/")
    assert errors == [], errors
    return page


def _csrf(page: Page) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.content())
    assert found is not None, "the page has no form with a CSRF token"
    return found[1]


def test_a_user_signs_in_with_the_provider_and_sees_only_their_project(
    browser: Browser, facility: Facility
) -> None:
    page = _sign_in(browser, facility, "alice")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "code=" not in page.url and "state=" not in page.url
    rows = page.locator("#experiments tbody tr")
    assert rows.count() == 1 and "higgs-search" in rows.first.inner_text()
    assert "btag" not in page.content()
    assert "alice" in page.locator("header").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "signed-in-experiments.png"), full_page=True)

    csrf = _csrf(page)
    for address in (
        f"/experiments/{facility.btag_id}",
        f"/experiments/{facility.btag_id}/curves?metric=val_auc",
        f"/experiments/{facility.btag_id}/events",
        f"/trials/{facility.btag_trial}",
        f"/trials/{facility.btag_trial}/log",
    ):
        guessed = page.request.get(facility.url + address)
        assert guessed.status == 404, address
        assert "btag" not in guessed.text(), address
    killed = page.request.post(
        f"{facility.url}/experiments/{facility.btag_id}/kill", form={"csrf": csrf}
    )
    assert killed.status == 404
    assert facility.service.get_experiment(facility.btag_id).state == ExperimentState.RUNNING

    page.goto(f"{facility.url}/experiments/{facility.higgs_id}")
    assert page.locator("#kill").count() == 1  # an editor of higgs

    # The pools page: alice's project with its share among both waiting projects (equal
    # shares), and nothing that names the other project.
    page.goto(f"{facility.url}/pools")
    projects = page.locator("table.by-project").inner_text()
    assert "higgs\t0\t50%" in projects and "btag" not in page.content()
    page.context.close()


def test_a_viewer_gets_no_buttons_and_cannot_kill(browser: Browser, facility: Facility) -> None:
    page = _sign_in(browser, facility, "bob")
    page.goto(f"{facility.url}/experiments/{facility.btag_id}")
    assert "btag-search" in page.content() and page.locator("#kill").count() == 0
    refused = page.request.post(
        f"{facility.url}/experiments/{facility.btag_id}/kill", form={"csrf": _csrf(page)}
    )
    assert refused.status == 403
    assert "bob is a viewer of project 'btag'; this needs the editor role" in refused.text()
    assert facility.service.get_experiment(facility.btag_id).state == ExperimentState.RUNNING
    page.context.close()


def _start(client: httpx.Client, facility: Facility) -> tuple[str, str]:
    """Start a sign-in and let the provider answer; (code, state) it sends back."""
    started = client.get(f"{facility.url}/login/oidc")
    assert started.status_code == 303 and SIGN_IN_COOKIE in client.cookies
    assert "code_challenge_method=S256" in started.headers["location"]
    answer = client.get(started.headers["location"])
    back = httpx.URL(answer.headers["location"])
    return back.params.get("code", ""), back.params["state"]


def test_sign_in_refuses_forged_states_replayed_codes_and_a_provider_refusal(
    facility: Facility,
) -> None:
    _signs_in_as(facility.issuer, "alice")
    callback = f"{facility.url}/login/callback"
    with httpx.Client() as browser_a, httpx.Client() as browser_b:
        code, state = _start(browser_a, facility)
        forged = browser_a.get(callback, params={"code": code, "state": "forged"})
        assert forged.status_code == 401
        assert "not started in this browser" in forged.text
        elsewhere = browser_b.get(callback, params={"code": code, "state": state})
        assert elsewhere.status_code == 401 and SESSION_COOKIE not in browser_b.cookies
        signed_in = browser_a.get(callback, params={"code": code, "state": state})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        assert SESSION_COOKIE in browser_a.cookies
        # The state cookie is gone after the sign-in; an attacker who kept it gets nothing.
        assert SIGN_IN_COOKIE not in browser_a.cookies
        with httpx.Client(cookies={SIGN_IN_COOKIE: state}) as replaying:
            replayed = replaying.get(callback, params={"code": code, "state": state})
        assert replayed.status_code == 401
        assert "this sign-in expired or was already used" in replayed.text

        _signs_in_as(facility.issuer, None)
        code, state = _start(browser_b, facility)
        assert code == ""
        denied = browser_b.get(callback, params={"error": "access_denied", "state": state})
        assert denied.status_code == 401
        shown = "Sign-in failed: the identity provider answered &#39;access_denied&#39;"
        assert shown in denied.text
        assert SESSION_COOKIE not in browser_b.cookies


def test_sign_out_ends_the_session(browser: Browser, facility: Facility) -> None:
    page = _sign_in(browser, facility, "alice")
    page.click("header form.logout button")
    page.wait_for_url(f"{facility.url}/login")
    again = page.goto(f"{facility.url}/")
    assert again is not None and again.status == 401 and "Sign in" in page.content()
    page.context.close()
