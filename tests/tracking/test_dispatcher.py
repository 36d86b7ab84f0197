"""The dispatcher hands every record to each tracker in order, off the caller's thread, and a
failing tracker costs only itself: one warning that names it, and training goes on."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from trainyard.config.tracking import TrackingSpec
from trainyard.protocol import MetricKind
from trainyard.tracking import MetricsLogged, Tracking, TrackingEvent, setup_problems

SPEC = TrackingSpec.model_validate({"tensorboard": "unused"})


class RecordingSink:
    def __init__(self, description: str, *, fail_on: int | None = None) -> None:
        self.description = description
        self.events: list[TrackingEvent] = []
        self.threads: set[str] = set()
        self.closed = False
        self._fail_on = fail_on

    def handle(self, event: TrackingEvent) -> None:
        self.threads.add(threading.current_thread().name)
        if self._fail_on is not None and len(self.events) == self._fail_on:
            raise ConnectionError("server said 503 Service Unavailable")
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


def _report(batches: int, experiment_id: int = 1) -> MetricsLogged:
    return MetricsLogged(
        experiment_id=experiment_id,
        trial_id=7,
        trial_number=0,
        kind=MetricKind.VALIDATION,
        batches=batches,
        values={"val_auc": batches / 100},
    )


def test_every_record_reaches_each_tracker_in_order_off_the_callers_thread() -> None:
    sinks = [RecordingSink("first"), RecordingSink("second")]
    tracking = Tracking(build_sinks=lambda spec, name, experiment_id: list(sinks))
    tracking.configure(1, "exp", SPEC)
    for batches in range(1, 51):
        tracking.emit(_report(batches))
    tracking.close()
    for sink in sinks:
        assert [e.batches for e in sink.events] == list(range(1, 51))  # type: ignore[union-attr]
        assert sink.threads == {"tracking"}
        assert sink.closed


def test_a_failing_tracker_is_named_once_and_dropped_while_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing, healthy = (
        RecordingSink("MLflow at http://mlflow:5000", fail_on=2),
        RecordingSink("tb"),
    )
    tracking = Tracking(build_sinks=lambda spec, name, experiment_id: [failing, healthy])
    tracking.configure(1, "exp", SPEC)
    with caplog.at_level(logging.WARNING):
        for batches in range(1, 6):
            tracking.emit(_report(batches))
        tracking.close()
    assert [e.batches for e in failing.events] == [1, 2]  # type: ignore[union-attr]
    assert [e.batches for e in healthy.events] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "MLflow at http://mlflow:5000 failed (server said 503 Service Unavailable); trainyard "
        "stops sending to it until the Master restarts, training goes on and every metric "
        "stays in trainyard's store"
    ]


def test_trackers_that_cannot_be_set_up_warn_and_records_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(spec: TrackingSpec, name: str, experiment_id: int) -> list[RecordingSink]:
        raise PermissionError("tb: Permission denied")

    tracking = Tracking(build_sinks=broken)
    tracking.configure(3, "exp", SPEC)
    with caplog.at_level(logging.WARNING):
        tracking.emit(_report(1, experiment_id=3))
        tracking.close()
    assert [r.getMessage() for r in caplog.records] == [
        "experiment 3: its trackers could not be set up (tb: Permission denied); training goes "
        "on and every metric stays in trainyard's store"
    ]


def test_an_experiment_without_trackers_starts_no_thread() -> None:
    built: list[str] = []
    tracking = Tracking(build_sinks=lambda spec, name, experiment_id: built.append(name) or [])
    tracking.configure(1, "exp", TrackingSpec())
    tracking.emit(_report(1))
    tracking.close()
    assert built == []
    assert "tracking" not in {t.name for t in threading.enumerate()}


def test_a_tracker_whose_library_is_missing_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails, find_spec says None
    spec = TrackingSpec.model_validate({"mlflow": "mlruns", "tensorboard": "tb"})
    assert setup_problems(spec) == [
        "`tracking.tensorboard`: needs the tensorboardX package, which is not installed where "
        "the Master runs; install it with `pip install 'trainyard[tracking]'`, or remove "
        "`tracking.tensorboard`"
    ]
