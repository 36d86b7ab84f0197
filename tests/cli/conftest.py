"""CLI fixtures: a store whose experiment holds text that would be rich markup, and the toy
data set and experiment files of the end-to-end runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import toy_data, write_experiment
from trainyard.config import ExperimentConfig, parse_experiment
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import (
    CheckpointEntry,
    CheckpointInventory,
    ExperimentState,
    MetricKind,
    MetricsReport,
    TrialState,
)
from trainyard.settings import Settings
from trainyard.store import open_store

__all__ = ["toy_data", "write_experiment"]

MARKUP = ("[/x]", "[bold]red[/bold]", "[link=file:///etc/passwd]x[/link]")
"""Text that rich would style, turn into a link, or refuse with a MarkupError."""


@dataclass
class StoredExperiment:
    """An experiment written through the Master's service, as a finished run leaves it."""

    home: Path
    service: MasterService
    experiment_id: int
    trial_ids: list[int]
    checkpoint: str
    log_path: Path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MasterService]:
    """The Master's service over a real SQLite store under tmp_path/home."""
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.resolved_database_url())
    yield MasterService(store, settings)
    store.close()


def experiment_config(tmp_path: Path, name: str, **sections: Any) -> ExperimentConfig:
    """A valid experiment file's config (its data need not exist); `sections` replace keys."""
    data = {"train": str(tmp_path / "t/*.parquet"), "val": str(tmp_path / "v/*.parquet")}
    base = {"name": name, "model": "mlp", "data": data}
    return parse_experiment({**base, "training": {"max_length": {"batches": 40}}, **sections})


@pytest.fixture
def stored(tmp_path: Path, service: MasterService) -> StoredExperiment:
    """Two grid trials: trial 0 validated twice and checkpointed, trial 1 errored.

    Hyperparameter values, the experiment's message, trial 1's error and its worker log all
    hold every string of MARKUP.
    """
    config = experiment_config(
        tmp_path,
        "literal",
        hyperparameters={
            "lr": 0.01,
            "act": {"type": "categorical", "vals": [MARKUP[1], MARKUP[2]]},
            "widths": [8, 4],
        },
        searcher={"name": "grid", "metric": "val_auc", "mode": "max"},
    )
    experiment_id = service.create_experiment(config)
    first, second = service.create_trials(experiment_id, num_free=2)
    for batches, auc in ((20, 0.75), (40, 0.7)):
        values = {"val_loss": 0.5 - auc / 10, "val_auc": auc, "val_accuracy": 0.6}
        report = MetricsReport(
            kind=MetricKind.VALIDATION, batches=batches, epoch=1.0, values=values
        )
        TrialReports(service).report_metrics(first, report)
    checkpoint = str(tmp_path / ("a-long-folder-name-" * 4) / "checkpoints" / "step-00000040")
    TrialReports(service).sync_checkpoints(
        first,
        CheckpointInventory(checkpoints=[CheckpointEntry(batches=40, path=checkpoint, epoch=1.0)]),
    )
    service.update_trial(first, state=TrialState.COMPLETED, total_batches=40)
    text = "\n".join(MARKUP)
    log_path = Path(str(service.get_trial(second).log_path))
    log_path.parent.mkdir(parents=True)
    log_path.write_text(f"worker starting\n{text}\n")
    service.update_trial(
        second, state=TrialState.ERRORED, error=f"worker failed {MARKUP[0]}\n{text}"
    )
    service.set_experiment_state(experiment_id, ExperimentState.COMPLETED, f"note {text}")
    return StoredExperiment(
        home=tmp_path / "home",
        service=service,
        experiment_id=experiment_id,
        trial_ids=[first, second],
        checkpoint=checkpoint,
        log_path=log_path,
    )
