"""The progress lines of `trainyard run` outside a terminal: each event once, in order."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from tests.cli.conftest import StoredExperiment, experiment_config
from trainyard.cli.progress import ProgressReporter
from trainyard.config import ExperimentConfig
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import MetricsReport, TrialState


class _Lines:
    """A reporter over a console that writes into memory; `new()` returns the lines since."""

    def __init__(self, service: MasterService, experiment_id: int) -> None:
        self.out = io.StringIO()
        config: ExperimentConfig = service.experiment_config(experiment_id)
        console = Console(file=self.out, width=1_000_000, soft_wrap=True)
        self.reporter = ProgressReporter(
            service, experiment_id, searcher=config.searcher, console=console
        )
        self._read = 0

    def new(self) -> list[str]:
        self.reporter.tick()
        text = self.out.getvalue()
        lines, self._read = text[self._read :].splitlines(), len(text)
        return [line.split(" ", 1)[1] for line in lines]  # without the time of day


def _report(service: MasterService, trial_id: int, kind: str, batches: int, **values: float):
    TrialReports(service).report_metrics(
        trial_id, MetricsReport(kind=kind, batches=batches, epoch=0.5, values=values)
    )


@pytest.fixture
def experiment_id(tmp_path: Path, service: MasterService) -> int:
    config = experiment_config(tmp_path, "progress", hyperparameters={"lr": 0.01})
    return service.create_experiment(config)


def test_each_event_prints_once_as_it_happens(service: MasterService, experiment_id: int) -> None:
    (trial_id,) = service.create_trials(experiment_id, num_free=1)
    lines = _Lines(service, experiment_id)
    name = f"trial 0 (id {trial_id})"
    assert lines.new() == []

    service.update_trial(trial_id, state=TrialState.RUNNING, total_batches=40)
    hyperparameters = service.get_trial(trial_id).hyperparameters
    launched = ", ".join(f"{k}={v}" for k, v in hyperparameters.items())
    assert lines.new() == [f"{name} launched: {launched}"]

    _report(service, trial_id, "training", 5, loss=0.69312, samples_per_second=1234.4)
    assert lines.new() == [f"{name} training step 5/40: loss 0.6931, samples/s 1,234"]
    assert lines.new() == []

    _report(service, trial_id, "validation", 20, val_loss=0.5, val_auc=0.8, val_accuracy=0.7)
    _report(service, trial_id, "validation", 30, val_loss=0.4, val_auc=0.9, val_accuracy=0.8)
    _report(service, trial_id, "training", 30, loss=0.25, samples_per_second=999.0)
    assert lines.new() == [
        f"{name} validation step 20/40: val_auc 0.8000, val_accuracy 0.7000, val_loss 0.5000",
        f"{name} validation step 30/40: val_auc 0.9000, val_accuracy 0.8000, val_loss 0.4000",
        f"{name} training step 30/40: loss 0.2500, samples/s 999",
    ]

    service.fail_or_retry(trial_id, reason="worker died [/x]\nlog tail", max_restarts=1)
    service.update_trial(trial_id, state=TrialState.RUNNING)
    assert lines.new() == [
        f"{name} restart 1 of 1 after: worker died [/x]",
        f"{name} launched: {launched}",
    ]

    traceback = 'Traceback (most recent call last):\n  File "t.py", line 1\n    raise\n'
    reason = f"ValueError: {traceback}ValueError: bad [bold]lr[/bold]\nlog tail"
    service.fail_or_retry(trial_id, reason=reason, max_restarts=1)
    assert lines.new() == [
        f"{name} ERRORED at step 30/40; best val_auc 0.9000 at step 30: "
        "ValueError: bad [bold]lr[/bold]"
    ]
    assert lines.new() == []


def test_a_trial_that_ends_between_two_ticks_prints_its_reports_and_end(
    service: MasterService, experiment_id: int
) -> None:
    (trial_id,) = service.create_trials(experiment_id, num_free=1)
    lines = _Lines(service, experiment_id)
    _report(service, trial_id, "validation", 10, val_auc=0.6)
    service.update_trial(trial_id, state=TrialState.COMPLETED, total_batches=10)
    assert lines.new() == [
        f"trial 0 (id {trial_id}) validation step 10/10: val_auc 0.6000",
        f"trial 0 (id {trial_id}) COMPLETED at step 10/10; best val_auc 0.6000 at step 10",
    ]


def test_a_resumed_experiment_does_not_repeat_its_history(stored: StoredExperiment) -> None:
    lines = _Lines(stored.service, stored.experiment_id)
    assert lines.new() == []
