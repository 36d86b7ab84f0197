"""A Master service and its HTTP API over a real store in a temporary home: every test runs on
SQLite and on PostgreSQL (`database_url`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from trainyard.config import ExperimentConfig, parse_experiment
from trainyard.datasets.toy import write_toy_dataset
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, TrialState
from trainyard.settings import Settings
from trainyard.store import open_store

ADMIN_TOKEN = "admin-s3cret"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy set for preflight: 64 training and 64 validation jets."""
    root = tmp_path_factory.mktemp("preflight")
    write_toy_dataset(root / "train", num_jets=64, seed=1)
    write_toy_dataset(root / "val", num_jets=64, seed=2)
    return root


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url)


@pytest.fixture
def service(settings: Settings) -> Iterator[MasterService]:
    store = open_store(settings.resolved_database_url())
    yield MasterService(store, settings)
    store.close()


@pytest.fixture
def config(tmp_path: Path) -> ExperimentConfig:
    return experiment_config(tmp_path, "api-test")


def experiment_config(tmp_path: Path, name: str, *, grid: bool = False) -> ExperimentConfig:
    """One trial at lr 0.01, or with `grid` a grid search over two learning rates."""
    lr = {"type": "categorical", "vals": [0.01, 0.02]} if grid else 0.01
    return parse_experiment(
        {
            "name": name,
            "model": "mlp",
            "data": {"train": str(tmp_path / "t/*.parquet"), "val": str(tmp_path / "v/*.parquet")},
            "hyperparameters": {"lr": lr},
            "searcher": {"name": "grid" if grid else "single"},
            "training": {"max_length": {"batches": 10}},
        }
    )


def running_trial(service: MasterService, config: ExperimentConfig) -> int:
    """A new experiment's first trial, RUNNING as after a launch."""
    experiment_id = service.create_experiment(config)
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    (created,) = service.create_trials(experiment_id, num_free=1)
    service.update_trial(created, state=TrialState.RUNNING)
    return created


@pytest.fixture
def trial_id(service: MasterService, config: ExperimentConfig) -> int:
    return running_trial(service, config)


@pytest.fixture
def api(service: MasterService) -> TestClient:
    """The API with no credential: each test sends the one it means."""
    return TestClient(create_app(service, admin_token=ADMIN_TOKEN))


@pytest.fixture
def admin(service: MasterService) -> TestClient:
    """The API as the CLI calls it, with the admin token."""
    return TestClient(
        create_app(service, admin_token=ADMIN_TOKEN),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )


def worker_client(service: MasterService, trial_id: int) -> TestClient:
    """The API as the worker of a freshly launched attempt of `trial_id` calls it."""
    token = service.issue_worker_token(trial_id)
    return TestClient(
        create_app(service, admin_token=ADMIN_TOKEN),
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.fixture
def worker(service: MasterService, trial_id: int) -> TestClient:
    return worker_client(service, trial_id)
