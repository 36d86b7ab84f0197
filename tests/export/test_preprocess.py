"""Our preprocess.json equals the one weaver-core's own DataConfig.export_json writes for the
same data config: the example config, a wrap-padded one with a per-jet group, a config whose
auto standardisation a training run completed, and the built-in inputs' equivalent config.
weaver-core is imported directly; without it this fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from weaver.utils.dataset import DataConfig

from tests.data import config_files
from trainyard.data.features import builtin_weaver_config
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.pipeline import prepare_config
from trainyard.data.weaver.writer import write_weaver_config
from trainyard.errors import ConfigError
from trainyard.export.preprocess import PREPROCESS_FILE, preprocess_json, write_preprocess_json


def weavers_json(config_path: Path, folder: Path) -> dict:
    """What weaver-core's --export-onnx writes next to the model, for this config file."""
    data_config = DataConfig.load(str(config_path), load_observers=False, load_reweight_info=False)
    path = folder / "weaver" / PREPROCESS_FILE
    path.parent.mkdir(parents=True)
    data_config.export_json(str(path))
    return json.loads(path.read_text())


def ours(config_path: Path, folder: Path) -> dict:
    written = write_preprocess_json(preprocess_json(load_weaver_config(config_path)), folder)
    return json.loads(written.read_text())


@pytest.mark.parametrize(
    "config_path", [config_files.EXAMPLE, config_files.WRAP], ids=["example", "wrap"]
)
def test_json_equals_weavers_for_the_same_config(config_path: Path, tmp_path: Path) -> None:
    expected = weavers_json(config_path, tmp_path)
    assert ours(config_path, tmp_path) == expected
    # Not vacuous: every input group is there, with its variables' standardisation.
    assert {"pf_points", "pf_features", "pf_mask"} <= set(expected["input_names"])
    assert expected["pf_features"]["var_infos"]["delta_r"]["norm_factor"] == 4.0


def test_json_of_a_completed_auto_config_equals_weavers(toy_dir: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "auto.yaml"
    shutil.copy(config_files.AUTO_WEIGHTED, config_path)
    completed = prepare_config(sorted(toy_dir.glob("*.parquet")), config_path)
    assert completed.source is not None and completed.source != config_path
    expected = weavers_json(completed.source, tmp_path)
    assert ours(completed.source, tmp_path) == expected
    log_pt = expected["pf_features"]["var_infos"]["log_pt"]
    assert log_pt["median"] != 0 and log_pt["norm_factor"] != 1  # computed from the jets


@pytest.mark.parametrize("vectors", [False, True], ids=["particlenet", "with-vectors"])
def test_json_of_the_builtin_inputs_equals_weavers_for_their_config(
    vectors: bool, tmp_path: Path
) -> None:
    builtin = builtin_weaver_config(max_particles=64, vectors=vectors)
    config_path = write_weaver_config(builtin, tmp_path / "b.yaml")
    expected = weavers_json(config_path, tmp_path)
    written = write_preprocess_json(preprocess_json(builtin), tmp_path)
    assert json.loads(written.read_text()) == expected
    assert expected["output_names"] == ["is_qcd", "is_top"]
    assert expected["pf_points"]["var_length"] == 64
    assert ("pf_vectors" in expected["input_names"]) == vectors


def test_a_config_with_auto_centers_left_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        preprocess_json(load_weaver_config(config_files.AUTO_WEIGHTED))
    assert (
        "the centers of ['log_pt', 'log_energy', 'log_energy_fraction'] are still 'auto'; the "
        "preprocessing JSON needs the values computed from the training files"
    ) in str(caught.value)
