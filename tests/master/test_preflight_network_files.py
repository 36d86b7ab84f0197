"""Preflight of experiments whose model is a weaver network file: a good one passes, and what
would fail in the worker is named before anything is queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainyard.config import parse_experiment
from trainyard.errors import ConfigError
from trainyard.master.preflight import preflight

REPO = Path(__file__).parents[2]
TOP_KIN = str(REPO / "examples" / "configs" / "top-kin-inputs.yaml")
PARTICLENET = str(REPO / "examples" / "networks" / "particlenet.py")
TINY = {"conv_params": [[4, [8, 8]]], "fc_params": [[16, 0.1]]}


def _config(root: Path, model: Any, config: str | None = TOP_KIN, **overrides: Any) -> Any:
    data = {"train": str(root / "train/*.parquet"), "val": str(root / "val/*.parquet")}
    if config is not None:
        data["config"] = config
    raw = {
        "name": "network-file",
        "model": model,
        "data": data,
        "training": {"max_length": {"epochs": 1}},
        **overrides,
    }
    return parse_experiment(raw)


def _problems(config: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    return str(caught.value)


def test_a_network_file_experiment_passes(data: Path) -> None:
    preflight(_config(data, {"name": PARTICLENET, "options": TINY}))


def test_a_search_over_a_network_files_own_option_passes(data: Path) -> None:
    hyperparameters = {"use_fusion": {"type": "categorical", "vals": [True, False]}}
    preflight(
        _config(
            data,
            {"name": PARTICLENET, "options": TINY},
            hyperparameters=hyperparameters,
            searcher={"name": "grid", "metric": "val_auc", "mode": "max"},
        )
    )


def test_a_missing_network_file_is_named_under_model(data: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "networks" / "tagger.py")
    message = _problems(_config(data, missing))
    assert f"`model.name`: network file {missing} does not exist" in message


def test_a_network_file_without_a_data_config_is_told_to_set_one(data: Path) -> None:
    message = _problems(_config(data, PARTICLENET, config=None))
    assert f"`data.config`: model {PARTICLENET!r} is a weaver network file" in message
    assert "set `data.config` to the YAML file the network was written for" in message


def test_a_network_file_that_fails_to_build_is_reported_with_its_traceback(
    data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def get_model(data_config, **kwargs):\n    return 1 / 0\n")
    message = _problems(_config(data, str(path)))
    assert f"`model`: network file {path}: get_model(data_config, **{{}}) failed" in message
    assert f'File "{path}", line 2, in get_model' in message and "ZeroDivisionError" in message


def test_packing_a_network_file_is_refused(data: Path) -> None:
    config = _config(data, {"name": PARTICLENET, "options": TINY}, resources={"pack": 2})
    message = _problems(config)
    assert "`resources.pack`:" in message
    assert "is called as forward(pf_points, pf_features, pf_vectors, pf_mask)" in message
