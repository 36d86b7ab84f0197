"""Validation reports are folded into each trial's stored curve as they arrive (SQLite and
PostgreSQL): what the dashboard reads equals the curve built from every stored report, a
step validated again takes its newest value, and other experiments' trials stay out."""

from __future__ import annotations

from pathlib import Path

from tests.master.conftest import experiment_config
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import MetricKind, MetricsReport
from trainyard.store.curve_thinning import MAX_POINTS, ThinnedCurve
from trainyard.store.curves import StoredCurve, experiment_curve_metrics, experiment_curves


def _validate(reports: TrialReports, trial_id: int, step: int, **values: float) -> None:
    report = MetricsReport(kind=MetricKind.VALIDATION, batches=step, epoch=0.0, values=values)
    reports.report_metrics(trial_id, report)


def _from_every_report(service: MasterService, trial_id: int, metric: str) -> StoredCurve:
    """The curve a full read of the trial's stored reports gives."""
    stored = service.trial_metrics(trial_id, MetricKind.VALIDATION)
    curve = ThinnedCurve.from_points(
        (m.batches, m.values[metric]) for m in stored if metric in m.values
    )
    best, step = curve.best("max")
    return StoredCurve(
        best=best, best_step=step, steps_json=curve.steps_json(), values_json=curve.values_json()
    )


def test_stored_curves_follow_the_reports_as_they_arrive(
    service: MasterService, tmp_path: Path
) -> None:
    shown = service.create_experiment(experiment_config(tmp_path, "shown", grid=True))
    other = service.create_experiment(experiment_config(tmp_path, "other"))
    long, short = service.create_trials(shown, num_free=2)
    (foreign,) = service.create_trials(other, num_free=1)
    reports = TrialReports(service)
    for step in range(1, 2 * MAX_POINTS + 51):
        auc = 0.5 + step / 1000
        if step == 7:  # a validation without the AUC (e.g. of one class)
            _validate(reports, long, 10 * step, val_loss=1 - auc)
        else:
            _validate(reports, long, 10 * step, val_auc=auc, val_loss=1 - auc)
    for step, auc in ((10, 0.6), (20, 0.7), (30, 0.65)):
        _validate(reports, short, step, val_auc=auc)
    _validate(reports, short, 20, val_auc=0.9)  # validated again after a resume: newest wins
    _validate(reports, foreign, 10, val_auc=0.99)

    with service.store.session() as session:
        curves = experiment_curves(session, experiment_id=shown, metric="val_auc", mode="max")
        names = experiment_curve_metrics(session, experiment_id=shown)
        bests = experiment_curves(
            session, experiment_id=shown, metric="val_loss", mode="min", with_points=False
        )
    assert curves == {
        trial: _from_every_report(service, trial, "val_auc") for trial in (long, short)
    }
    assert len(curves[long].steps_json.split(",")) <= MAX_POINTS
    assert curves[long].steps_json.startswith("[10, ") and curves[long].steps_json.endswith(
        f", {10 * (2 * MAX_POINTS + 50)}]"
    )
    assert (curves[short].best, curves[short].best_step) == (0.9, 20)
    assert curves[short].steps_json == "[10, 20, 30]"
    assert curves[short].values_json == "[0.6, 0.9, 0.65]"
    assert names == ["val_auc", "val_loss"]
    assert set(bests) == {long} and bests[long].steps_json == "[]"
    last = 2 * MAX_POINTS + 50
    assert (bests[long].best, bests[long].best_step) == (1 - (0.5 + last / 1000), 10 * last)
