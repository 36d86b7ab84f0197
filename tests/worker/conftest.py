"""Fixtures shared by the worker's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.datasets.toy import write_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small toy dataset (100 training, 50 validation jets) for in-process Trainers."""
    root = tmp_path_factory.mktemp("trainer")
    write_toy_dataset(root / "train", num_jets=100, seed=1)
    write_toy_dataset(root / "val", num_jets=50, seed=2)
    return root
