"""The dashboard in a real browser (Debian's Chromium through Playwright), served by a real
Master over a copy of a finished run's store: sign-in by the printed link, every page loads
without a console error and shows what the store holds, a live update arrives without a
reload, the kill button changes the experiment, and a forged form or a missing session is
refused. Screenshots of each page go to test-artifacts/dashboard/."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Page

from tests.integration.helpers import experiment
from trainyard.config import parse_experiment
from trainyard.master.api.app import create_app
from trainyard.master.reports import TrialReports
from trainyard.master.server import EmbeddedServer, new_token
from trainyard.master.service import MasterService
from trainyard.metrics import ROC_POINTS, background_rejection
from trainyard.protocol import (
    DecisionAction,
    ExperimentState,
    MetricKind,
    MetricsReport,
    OutcomeState,
    TrialOutcome,
    TrialState,
)
from trainyard.settings import Settings
from trainyard.store import open_store
from trainyard.store.rocs import validation_roc
from trainyard.web.dashboard import SESSION_COOKIE, install_dashboard
from trainyard.web.pools import PoolSlots

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
VENDOR = ROOT / "src" / "trainyard" / "web" / "static" / "vendor"
LOGIN_TOKEN = "dashboard-test-token"
POOL = PoolSlots(name="default", executor="local", capacity=4, free=2, node="node-a")
"""What the test's executor reports: the pool every test experiment uses."""


@dataclass
class Dashboard:
    url: str
    service: MasterService
    finished_id: int
    running_id: int


@pytest.fixture(scope="module")
def dashboard(finished_run, toy_data, tmp_path_factory) -> Iterator[Dashboard]:
    """A Master over a copy of the finished run's home, plus a RUNNING experiment with one
    trial (no workers: the test plays the runner by writing to the store)."""
    home = tmp_path_factory.mktemp("dashboard") / "home"
    shutil.copytree(finished_run.home, home)
    settings = Settings(home=home)
    store = open_store(settings.resolved_database_url())
    service = MasterService(store, settings)
    finished_id = service.list_experiments()[0].id
    running_id = service.create_experiment(
        parse_experiment(
            experiment(
                toy_data,
                name="live-search",
                hyperparameters={"lr": 0.003, "batch_size": 64, "note": "<b>bold</b>"},
            )
        )
    )
    service.set_experiment_state(running_id, ExperimentState.RUNNING)
    service.create_trials(running_id, num_free=1)
    app = create_app(service, admin_token=new_token())
    install_dashboard(app, login_token=LOGIN_TOKEN, pools=lambda: [POOL])
    server = EmbeddedServer(app)
    server.start()
    try:
        yield Dashboard(server.url, service, finished_id, running_id)
    finally:
        server.stop()
        store.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """A signed-in page that fails the test on any console error or page exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{dashboard.url}/login?token={LOGIN_TOKEN}")
    assert page.url == f"{dashboard.url}/"  # the token left the address bar
    yield page
    context.close()
    assert errors == [], errors


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_sets_a_strict_http_only_cookie_and_a_wrong_link_is_refused(
    browser: Browser, dashboard: Dashboard, page: Page
) -> None:
    (cookie,) = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    stranger = browser.new_context().new_page()
    refused = stranger.goto(f"{dashboard.url}/login?token=guessed")
    assert refused is not None and refused.status == 401
    assert "That dashboard link is not this Master's." in stranger.content()
    no_session = stranger.goto(f"{dashboard.url}/experiments/{dashboard.finished_id}")
    assert no_session is not None and no_session.status == 401
    assert "Sign in" in stranger.content() and "e2e" not in stranger.content()
    stranger.context.close()


def test_experiments_page_lists_the_store(page: Page, dashboard: Dashboard) -> None:
    names = [e.name for e in dashboard.service.list_experiments()]
    rows = page.locator("#experiments tbody tr")
    assert rows.count() == len(names) == 2
    page.fill("input[name=q]", "e2e")
    page.click("button[type=submit]:has-text('filter')")
    assert page.locator("#experiments tbody tr").count() == 1
    _shot(page, "experiments")


def test_experiment_page_shows_trials_and_charts(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/experiments/{dashboard.finished_id}")
    trials = dashboard.service.list_trials(dashboard.finished_id)
    assert page.locator("#trials tbody tr").count() == len(trials)
    assert page.locator("#trials tr.best").count() == 1
    best = max(
        m.values["val_auc"]
        for m in dashboard.service.trial_metrics(trials[0].id, MetricKind.VALIDATION)
    )
    assert f"{best:.4f}" in page.locator("#trials").inner_text()
    page.wait_for_selector("#curve-val_auc canvas")  # the searcher's metric, on the page
    page.select_option("#curve-metric", "val_loss")  # another one, fetched from the Master
    page.wait_for_selector("#curve-val_loss canvas")
    page.select_option("#curve-metric", "val_auc")
    page.wait_for_selector("#curve-val_auc canvas")
    _shot(page, "experiment")


def test_experiment_page_shows_the_best_trials_roc_curve_as_the_worker_stored_it(
    page: Page, dashboard: Dashboard
) -> None:
    """The real run's worker sent a down-sampled ROC with each validation; the page draws the
    best validation's, and prints 1/eps_B at 30% and 50% as background_rejection reads them
    off that curve, which equal the rejections the worker computed on its full curve."""
    service = dashboard.service
    (trial,) = service.list_trials(dashboard.finished_id)
    best = service.best_validation(trial.id, metric="val_auc", mode="max")
    assert best is not None
    with service.store.session() as session:
        stored = validation_roc(session, trial_id=trial.id, batches=best.batches)
    assert stored is not None and len(stored.signal_efficiency) == ROC_POINTS
    page.goto(f"{dashboard.url}/experiments/{dashboard.finished_id}")
    page.wait_for_selector("#roc canvas")
    shown = page.evaluate("JSON.parse(document.getElementById('chart-data').textContent).roc")
    expected = [
        [s, 1 / b]
        for s, b in zip(stored.signal_efficiency, stored.background_efficiency, strict=True)
        if b > 0
    ]
    assert shown["trial"] == trial.number and len(shown["points"]) == len(expected)
    for (s, r), (s_expected, r_expected) in zip(shown["points"], expected, strict=True):
        assert s == s_expected and r == pytest.approx(r_expected, rel=1e-12)
    marks = page.locator("#roc-marks").inner_text()
    signal, background = np.array(stored.signal_efficiency), np.array(stored.background_efficiency)
    for efficiency, reported in ((0.3, "val_rej30"), (0.5, "val_rej50")):
        rejection = background_rejection(signal, background, efficiency)
        assert rejection == pytest.approx(best.values[reported], rel=1e-6)
        assert [efficiency, rejection] in shown["marks"]
        assert f"= {rejection:.1f} at" in marks and f"{efficiency:.0%}" in marks
    _shot(page, "experiment-roc")


def test_trial_page_shows_checkpoints_config_and_log(page: Page, dashboard: Dashboard) -> None:
    trial = dashboard.service.list_trials(dashboard.finished_id)[0]
    page.goto(f"{dashboard.url}/trials/{trial.id}")
    checkpoints = dashboard.service.trial_checkpoints(trial.id)
    assert page.locator("#checkpoints tbody tr").count() == len(checkpoints) > 0
    assert "particlenet-lite" in page.locator("#config").inner_text()
    log = Path(trial.log_path or "").read_text()
    last_line = log.strip().splitlines()[-1]
    assert last_line in page.locator("#log").inner_text()
    page.wait_for_selector("#metrics canvas")
    _shot(page, "trial")


def test_live_update_and_kill_from_the_page(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/experiments/{dashboard.running_id}")
    (trial,) = dashboard.service.list_trials(dashboard.running_id)
    dashboard.service.update_trial(trial.id, batches_trained=17)  # as a worker's report would
    page.wait_for_function(
        "document.querySelector('#trials tbody tr td:nth-child(3)').textContent.startsWith('17')",
        timeout=30_000,
    )  # arrived by server-sent event: no reload
    assert page.locator("#trials tbody tr td").nth(2).inner_text().startswith("17")
    assert "<b>bold</b>" in page.locator("#trials").inner_text()  # shown as text, not markup

    forged = page.request.post(
        f"{dashboard.url}/experiments/{dashboard.running_id}/kill",
        form={"csrf": "0" * 64},
        max_redirects=0,
    )
    assert forged.status == 403 and "CSRF" in forged.text()
    assert dashboard.service.get_experiment(dashboard.running_id).state == "RUNNING"

    page.click("#kill")
    page.wait_for_selector("#experiment-state:has-text('CANCELED')")
    assert dashboard.service.get_experiment(dashboard.running_id).state == "CANCELED"


def test_pools_page_shows_slots_projects_and_nodes_and_follows_the_store(
    page: Page, dashboard: Dashboard, toy_data: Path
) -> None:
    service = dashboard.service
    grid = {"type": "categorical", "vals": [0.001, 0.002, 0.003]}
    experiment_id = service.create_experiment(
        parse_experiment(
            experiment(
                toy_data,
                name="pool-search",
                hyperparameters={"lr": grid, "batch_size": 64},
                searcher={"name": "grid"},
            )
        )
    )
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    first, second, _ = service.create_trials(experiment_id, num_free=3)
    service.update_trial(first, state=TrialState.RUNNING)
    page.goto(f"{dashboard.url}/pools")
    row = page.locator("#pools tr[data-pool=default]")
    cells = ("in-use", "queued", "capacity", "free")
    shown = {cell: row.locator(f".{cell}").inner_text() for cell in cells}
    in_use, queued = (
        _trials_in(service, TrialState.RUNNING),
        _trials_in(service, TrialState.QUEUED),
    )
    assert in_use >= 1 and queued >= 2  # this test's, and any other unfinished experiment's
    assert shown == {"in-use": str(in_use), "queued": str(queued), "capacity": "4", "free": "2"}
    projects = page.locator("table.by-project[data-pool=default]").inner_text()
    assert f"default\t{in_use}\t100% (4.0 slots)" in projects  # the only project waiting
    nodes = page.locator("table.by-node[data-pool=default]").inner_text()
    assert "node-a\tpool-search #0" in nodes
    _shot(page, "pools")
    service.update_trial(second, state=TrialState.RUNNING)  # the table follows without a reload
    page.wait_for_function(
        "document.querySelector('#pools tr[data-pool=default] .in-use').textContent === "
        f"'{in_use + 1}'",
        timeout=10_000,
    )
    assert "pool-search #0, pool-search #1" in page.locator("table.by-node").inner_text()
    service.set_experiment_state(experiment_id, ExperimentState.CANCELED)


def test_asha_rungs_panel_shows_the_searchers_decisions(
    page: Page, dashboard: Dashboard, toy_data: Path
) -> None:
    """Six trials report through the Master's worker logic (reports, the searcher's decision,
    the outcome), as workers would; the panel lists who went on and who stopped where."""
    service, reports = dashboard.service, TrialReports(dashboard.service)
    search = {"name": "asha", "max_trials": 6, "asha": {"reduction_factor": 2}}
    lr = {"type": "log", "min": 1e-4, "max": 1e-2}
    config = experiment(
        toy_data, name="asha-search", hyperparameters={"lr": lr, "batch_size": 64}, searcher=search
    )
    experiment_id = service.create_experiment(parse_experiment(config))
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    trial_ids = service.create_trials(experiment_id, num_free=6)
    stopped_at: dict[int, int] = {}
    for step in (20, 40):  # the first validation, then x2
        for rank, trial_id in enumerate(trial_ids):
            if trial_id in stopped_at:
                continue
            values = {"val_auc": 0.9 - rank / 100 + step / 1000, "val_rej30": 10.0 + rank}
            report = MetricsReport(
                kind=MetricKind.VALIDATION, batches=step, epoch=0.1, values=values
            )
            reports.report_metrics(trial_id, report)
            if reports.decide(trial_id).action is DecisionAction.STOP:
                reports.finish_trial(trial_id, TrialOutcome(state=OutcomeState.STOPPED))
                stopped_at[trial_id] = step
    page.goto(f"{dashboard.url}/experiments/{experiment_id}")
    rows = page.locator("#rungs tbody tr")
    assert rows.count() == 2 and stopped_at
    numbers = {t.id: t.number for t in service.list_trials(experiment_id)}
    for index, step in enumerate((20, 40)):
        cells = rows.nth(index).locator("td")
        stopped = {numbers[t] for t, at in stopped_at.items() if at == step}
        shown = {int(n.lstrip("#")) for n in cells.nth(4).inner_text().split(", ") if n}
        assert (cells.nth(0).inner_text(), cells.nth(1).inner_text()) == (str(index), str(step))
        assert shown == stopped
    assert "No ROC curve yet" in page.locator("#roc-none").inner_text()  # no worker sent one
    page.wait_for_selector("#curve-val_auc canvas")
    _shot(page, "experiment-asha")
    service.set_experiment_state(experiment_id, ExperimentState.CANCELED)


def _trials_in(service: MasterService, state: TrialState) -> int:
    """Trials in `state` of the unfinished experiments (one slot each), by the store."""
    unfinished = (ExperimentState.QUEUED, ExperimentState.RUNNING, ExperimentState.PAUSED)
    return sum(
        1
        for e in service.list_experiments()
        if e.state in unfinished
        for t in service.list_trials(e.id)
        if t.state == state
    )


def test_vendored_files_are_the_recorded_releases() -> None:
    table = (VENDOR / "VENDORED.md").read_text()
    recorded = dict(re.findall(r"\| `([\w.-]+\.js)` \|.*\| ([0-9a-f]{64}) \|", table))
    assert set(recorded) == {p.name for p in VENDOR.glob("*.js")}
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
