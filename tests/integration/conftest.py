"""Shared set-up for end-to-end runs: a small toy set, experiment files, the CLI as a process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainyard.datasets.toy import write_toy_dataset


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root / "train", num_jets=2048, seed=11)
    write_toy_dataset(root / "val", num_jets=512, seed=12)
    return root


@pytest.fixture
def write_experiment(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(config: dict[str, Any]) -> Path:
        path = tmp_path / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write
