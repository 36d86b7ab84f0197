"""The dashboard's curve cache over a real store (SQLite and PostgreSQL): after reports arrive
in any order, for this experiment or another, it answers what a full read of the store says."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert

from tests.master.conftest import experiment_config
from trainyard.master.service import MasterService
from trainyard.protocol import MetricKind
from trainyard.store import Metric
from trainyard.web import curve_cache
from trainyard.web.curve_cache import CurveCache


def _report(service: MasterService, trial_id: int, step: int, auc: float, **fields: int) -> None:
    with service.store.session() as session:
        row = {"trial_id": trial_id, "kind": MetricKind.VALIDATION, "batches": step, "epoch": 0.0}
        session.execute(insert(Metric), [{**row, "values": {"val_auc": auc}, **fields}])


def _as_stored(service: MasterService, experiment_id: int) -> dict[int, list[tuple[int, float]]]:
    series = service.experiment_metric_series(experiment_id, MetricKind.VALIDATION, "val_auc")
    return {trial: sorted(dict(points).items()) for trial, points in series.items()}


def test_the_cache_follows_new_reports_of_its_experiment_only(
    service: MasterService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(curve_cache, "LOOKBACK_EVERY_S", 0.0)  # look back on every read
    shown = service.create_experiment(experiment_config(tmp_path, "shown", grid=True))
    other = service.create_experiment(experiment_config(tmp_path, "other"))
    first, second = service.create_trials(shown, num_free=2)
    (foreign,) = service.create_trials(other, num_free=1)
    cache = CurveCache(service)

    def read() -> dict[int, list[tuple[int, float]]]:
        curves = cache.curves(shown, "val_auc", "max", [first])  # `second` unknown to the page
        return {trial: sorted(curve.points.items()) for trial, curve in curves.items()}

    _report(service, first, 10, 0.7)
    assert read() == _as_stored(service, shown)
    _report(service, first, 20, 0.8, id=1000)
    _report(service, foreign, 10, 0.99)
    _report(service, second, 10, 0.6)
    assert read() == _as_stored(service, shown)
    _report(service, first, 30, 0.75, id=900)  # a lower id committed late (PostgreSQL can)
    assert read() == _as_stored(service, shown)
    curves = cache.curves(shown, "val_auc", "max", [first, second])
    assert (curves[first].best, curves[first].best_step) == (0.8, 20)
    assert curves[first].steps_json == "[10, 20, 30]"
    assert cache.metric_names(shown, [first, second]) == ["val_auc"]
