"""The dashboard's experiment page for a large search: server render time and bytes shipped.

Issue 10's goal: an experiment of 1,000 trials with 200 validation reports each renders on the
server in under a second and ships at most 2 MB. This builds such a store (SQLite, every report
with five metrics), serves the real app in-process, and measures, with repeats:

- the time of `GET /experiments/1` (a signed-in request: the page with the trial table and the
  searcher's metric's curves for every trial), median and spread, and apart from those the
  first view, which fills the dashboard's curve cache from every report;
- the time of one more metric's curves (`GET /experiments/1/curves?metric=val_loss`);
- the bytes a browser receives for the page: the HTML and every script and style it loads, as
  sent (gzip) and uncompressed.

There is no peer here: determined's web UI needs its cluster, which cannot run on this machine.

    python -m benchmarks.dashboard                  # 1,000 trials x 200 reports
    python -m benchmarks.dashboard --trials 50 --reports 20 --repeats 2 --out /tmp/x   # quick
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import insert, select

from benchmarks.environment import describe, load_average
from benchmarks.results_files import write_results
from tests.postgres import start_server, stop_server
from trainyard.config import parse_experiment
from trainyard.master.api.app import create_app
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import MetricsReport
from trainyard.settings import Settings
from trainyard.store import Metric, Trial, open_store
from trainyard.store.curves import fold_validation, rebuild_trial_curves
from trainyard.store.models import MetricKind, TrialState
from trainyard.web.dashboard import install_dashboard

RESULTS_DIR = Path(__file__).parent / "results"
TOKEN = "benchmark"
GOAL_SECONDS, GOAL_BYTES = 1.0, 2_000_000


class Timing(BaseModel):
    median_s: float
    min_s: float
    max_s: float


class DashboardResult(BaseModel):
    trials: int
    reports_per_trial: int
    metrics_per_report: int
    repeats: int
    database: str = "SQLite"
    first_page_s: float
    """The first view since the Master started: the curve cache reads every report."""
    page: Timing
    """Later views: the cache reads only the reports newer than it has seen."""
    first_other_metric_curves_s: float
    other_metric_curves: Timing
    storing_a_validation: Timing
    """What the Master spends on one more validation report of a trial (the worker's call)."""
    folding_its_curves: Timing
    """Of that, folding the report into the trial's stored curves."""
    html_bytes: int
    html_gzip_bytes: int
    assets_bytes: int
    assets_gzip_bytes: int
    environment: dict[str, object]
    load_average: float

    @property
    def shipped_gzip(self) -> int:
        return self.html_gzip_bytes + self.assets_gzip_bytes


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with tempfile.TemporaryDirectory() as home, _database(args.postgres) as database_url:
        service = _filled_service(Path(home), database_url, args.trials, args.reports)
        app = create_app(service, admin_token="unused")
        install_dashboard(app, login_token=TOKEN)
        with TestClient(app) as client:
            assert client.get(f"/login?token={TOKEN}", follow_redirects=False).status_code == 303
            started = time.perf_counter()
            page = client.get("/experiments/1")  # the first view since the Master started
            first_page_s = time.perf_counter() - started
            assert page.status_code == 200, page.text[:500]
            page_timing = _time(client, "/experiments/1", args.repeats)
            started = time.perf_counter()
            assert client.get("/experiments/1/curves?metric=val_loss").status_code == 200
            first_curves_s = time.perf_counter() - started
            curves_timing = _time(client, "/experiments/1/curves?metric=val_loss", args.repeats)
            assets = _assets(client, page.text)
        storing, folding = _report_costs(service, args.reports, 6 * args.repeats)
        service.store.close()
    result = DashboardResult(
        trials=args.trials,
        reports_per_trial=args.reports,
        metrics_per_report=len(METRICS),
        repeats=args.repeats,
        database="PostgreSQL" if args.postgres else "SQLite",
        first_page_s=first_page_s,
        page=page_timing,
        first_other_metric_curves_s=first_curves_s,
        other_metric_curves=curves_timing,
        storing_a_validation=storing,
        folding_its_curves=folding,
        html_bytes=len(page.content),
        html_gzip_bytes=len(gzip.compress(page.content)),
        assets_bytes=sum(len(body) for body in assets.values()),
        assets_gzip_bytes=sum(len(gzip.compress(body)) for body in assets.values()),
        environment=describe().model_dump(mode="json"),
        load_average=load_average(),
    )
    write_results(args.out, args.tag, result.model_dump(mode="json"), _table(result))
    return 0


METRICS = ("val_auc", "val_loss", "val_accuracy", "val_rej30", "val_rej50")


@contextmanager
def _database(postgres: bool) -> Iterator[str | None]:
    """None (a SQLite file in the home), or the URL of a throwaway PostgreSQL database."""
    if not postgres:
        yield None
        return
    server = start_server()
    try:
        with server.connect() as connection:
            connection.execute("CREATE DATABASE dashboard")
        yield server.url("dashboard")
    finally:
        stop_server(server)


def _filled_service(
    home: Path, database_url: str | None, num_trials: int, num_reports: int
) -> MasterService:
    """An experiment of `num_trials` finished trials, each with `num_reports` validations."""
    settings = Settings(home=home, database_url=database_url)
    service = MasterService(open_store(settings.resolved_database_url()), settings)
    config = {
        "name": "big-search",
        "model": {"name": "particlenet-lite"},
        "data": {"train": str(home / "train.parquet"), "val": str(home / "val.parquet")},
        "hyperparameters": {
            "lr": {"type": "log", "min": 1e-4, "max": 1e-2},
            "batch_size": {"type": "categorical", "vals": [128, 256, 512]},
        },
        "training": {"max_length": {"batches": 100 * num_reports}},
        "searcher": {"name": "random", "max_trials": num_trials},
    }
    experiment_id = service.create_experiment(parse_experiment(config))
    rng = random.Random(1)
    with service.store.session() as session:
        trials = [
            {
                "experiment_id": experiment_id,
                "number": n,
                "state": TrialState.COMPLETED,
                "hyperparameters": {
                    "lr": 10 ** rng.uniform(-4, -2),
                    "batch_size": rng.choice([128, 256, 512]),
                },
                "batches_trained": 100 * num_reports,
            }
            for n in range(num_trials)
        ]
        ids = list(session.scalars(insert(Trial).returning(Trial.id), trials))
        rows = []
        for trial_id in ids:
            ceiling = rng.uniform(0.85, 0.95)
            for r in range(1, num_reports + 1):
                auc = ceiling - 0.2 * math.exp(-r / 30) + rng.gauss(0, 0.002)
                values = {"val_auc": auc, "val_loss": 1 - auc, "val_accuracy": auc - 0.05,
                          "val_rej30": 50 * auc, "val_rej50": 20 * auc}  # fmt: skip
                rows.append({"trial_id": trial_id, "kind": MetricKind.VALIDATION,
                             "batches": 100 * r, "epoch": r / 10, "values": values})  # fmt: skip
        session.execute(insert(Metric), rows)
        for trial_id in ids:  # what the Master folds in as the reports arrive
            rebuild_trial_curves(session, trial_id=trial_id)
    return service


def _report_costs(service: MasterService, num_reports: int, count: int) -> tuple[Timing, Timing]:
    """The time of storing `count` more validation reports of the first trial, and of folding
    the same values into the second trial's curves alone, each trial past `num_reports`."""
    reports = TrialReports(service)
    with service.store.session() as session:
        first, second = session.scalars(select(Trial.id).order_by(Trial.id).limit(2))
    storing, folding = [], []
    for r in range(num_reports + 1, num_reports + 1 + count):
        values = {name: 0.5 + r / 1e4 for name in METRICS}
        report = MetricsReport(kind=MetricKind.VALIDATION, batches=100 * r, epoch=0, values=values)
        started = time.perf_counter()
        reports.report_metrics(first, report)
        storing.append(time.perf_counter() - started)
        with service.store.session() as session:
            started = time.perf_counter()
            fold_validation(session, trial_id=second, batches=100 * r, values=values)
            folding.append(time.perf_counter() - started)
    return _timing(storing), _timing(folding)


def _timing(seconds: list[float]) -> Timing:
    return Timing(median_s=statistics.median(seconds), min_s=min(seconds), max_s=max(seconds))


def _time(client: TestClient, url: str, repeats: int) -> Timing:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:500]
    return _timing(seconds)


def _assets(client: TestClient, html: str) -> dict[str, bytes]:
    """Every script and style sheet the page loads, uncompressed."""
    urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    return {url: client.get(url).content for url in urls}


def _table(result: DashboardResult) -> str:
    shipped = result.shipped_gzip
    raw = result.html_bytes + result.assets_bytes
    return "\n".join(
        [
            f"# Dashboard: experiment page of {result.trials} trials x "
            f"{result.reports_per_trial} validations ({result.metrics_per_report} metrics each)",
            "",
            f"{result.environment.get('cpu_model')}; load average {result.load_average:.1f}; "
            f"{result.repeats} repeats; {result.database}; in-process ASGI client (no network)",
            "",
            "| measure | median | min | max | goal |",
            "| --- | --- | --- | --- | --- |",
            f"| page render (GET /experiments/1) | {result.page.median_s:.3f} s | "
            f"{result.page.min_s:.3f} s | {result.page.max_s:.3f} s | < {GOAL_SECONDS:.0f} s |",
            f"| the first view since the Master started (once) | "
            f"{result.first_page_s:.3f} s | | | |",
            f"| another metric's curves | {result.other_metric_curves.median_s:.3f} s | "
            f"{result.other_metric_curves.min_s:.3f} s | "
            f"{result.other_metric_curves.max_s:.3f} s | |",
            f"| another metric's curves, first time (once) | "
            f"{result.first_other_metric_curves_s:.3f} s | | | |",
            _ms_row("storing one more validation report", result.storing_a_validation),
            _ms_row("of which folding it into the stored curves", result.folding_its_curves),
            "",
            "| bytes | sent (gzip) | uncompressed |",
            "| --- | --- | --- |",
            f"| page HTML with the curves | {result.html_gzip_bytes:,} | {result.html_bytes:,} |",
            f"| scripts and styles | {result.assets_gzip_bytes:,} | {result.assets_bytes:,} |",
            f"| total (goal <= {GOAL_BYTES:,}) | {shipped:,} | {raw:,} |",
            "",
        ]
    )


def _ms_row(label: str, timing: Timing) -> str:
    return (
        f"| {label} | {1e3 * timing.median_s:.1f} ms | {1e3 * timing.min_s:.1f} ms | "
        f"{1e3 * timing.max_s:.1f} ms | |"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--reports", type=int, default=200, help="validations per trial")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--postgres", action="store_true", help="a throwaway PostgreSQL server, not SQLite"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default="dashboard")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
