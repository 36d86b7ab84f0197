"""A Master service over a real SQLite store in a temporary home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trainyard.config import ExperimentConfig, parse_experiment
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import open_store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def service(settings: Settings) -> Iterator[MasterService]:
    store = open_store(settings.resolved_database_url())
    yield MasterService(store, settings)
    store.close()


@pytest.fixture
def config(tmp_path: Path) -> ExperimentConfig:
    return parse_experiment(
        {
            "name": "api-test",
            "model": "mlp",
            "data": {"train": str(tmp_path / "t/*.parquet"), "val": str(tmp_path / "v/*.parquet")},
            "hyperparameters": {"lr": 0.01},
            "training": {"max_length": {"batches": 10}},
        }
    )
