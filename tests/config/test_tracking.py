"""The experiment file's `tracking` section: shorthands, paths, and the mistakes it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.config.test_loader import MINIMAL, _problems
from trainyard.config import load_experiment, parse_experiment


def test_shorthands_expand_and_relative_folders_follow_the_data_paths(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    tracking = {"mlflow": "mlruns", "tensorboard": "~/tb"}
    file.write_text(yaml.safe_dump({**MINIMAL, "tracking": tracking}))
    config = load_experiment(file, base_dir=Path("/analysis"))
    assert config.tracking.mlflow is not None and config.tracking.tensorboard is not None
    assert config.tracking.mlflow.uri == "/analysis/mlruns"
    assert config.tracking.mlflow.experiment is None
    assert config.tracking.mlflow.log_checkpoint is True
    assert config.tracking.tensorboard.dir == str(Path("~/tb").expanduser())


@pytest.mark.parametrize(
    "uri", ["http://mlflow.cern.ch:5000", "sqlite:///runs/mlflow.db", "file:///data/mlruns"]
)
def test_uris_are_kept_as_written(uri: str) -> None:
    config = parse_experiment({**MINIMAL, "tracking": {"mlflow": {"uri": uri}}})
    assert config.tracking.mlflow is not None and config.tracking.mlflow.uri == uri


def test_credentials_in_the_mlflow_uri_are_refused_with_where_to_put_them() -> None:
    problems = _problems({**MINIMAL, "tracking": {"mlflow": "https://alice:s3cret@mlflow:443"}})
    assert "`tracking.mlflow.uri`: " in problems
    assert "the MLflow URI holds a user name or password" in problems
    assert "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in (
        problems
    )
    assert "s3cret" not in problems


def test_an_unknown_scheme_and_an_unknown_key_are_named() -> None:
    problems = _problems({**MINIMAL, "tracking": {"mlflow": "wandb://team/project"}})
    assert "unsupported MLflow URI scheme 'wandb:'" in problems
    problems = _problems({**MINIMAL, "tracking": {"tensorbaord": "tb"}})
    assert "tracking.tensorbaord" in problems and "tensorboard" in problems
