"""weaver data configs parse into typed objects with weaver's defaults, and go back unchanged."""

import copy
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from weaver.utils.data.config import DataConfig

from tests.data import config_files
from trainyard.data.weaver.parser import load_weaver_config, parse_weaver_config
from trainyard.data.weaver.types import (
    CustomLabels,
    InputVariable,
    NewVariable,
    PrecomputedWeights,
    Preprocess,
    Reweighting,
    SimpleLabels,
)
from trainyard.data.weaver.writer import auto_config_path, to_weaver_mapping, write_weaver_config
from trainyard.errors import ConfigError

WRAP = config_files.WRAP


@pytest.fixture
def raw() -> dict[str, Any]:
    """The wrap test config as decoded YAML, to edit per test."""
    return yaml.safe_load(WRAP.read_text())


def _problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_weaver_config(raw, source="test config")
    return str(caught.value)


def test_a_config_parses_into_typed_frozen_objects() -> None:
    config = load_weaver_config(WRAP)
    assert [group.name for group in config.inputs] == [
        "pf_points",
        "pf_features",
        "pf_momenta",
        "pf_mask",
        "jet",
    ]
    features = config.inputs[1]
    assert (features.length, features.pad_mode) == (128, "wrap")
    assert features.variables[0] == InputVariable("log_pt", 1.7, 0.7, -5.0, 5.0, 0.0)
    assert features.variables[5] == InputVariable("part_deta", None)
    assert config.inputs[2].variables[0] == InputVariable("part_px", 0.0, 0.01, -10, 10, -1)
    assert config.inputs[3].pad_mode == "constant"
    assert (config.inputs[4].length, len(config.inputs[4].variables)) == (None, 2)
    assert config.preprocess == Preprocess("manual", 0.5)
    selection = "(jet_nparticles > 0) & (np.abs(jet_eta) < 2.5)"
    assert config.selection == selection and config.selection_for(training=False) == selection
    assert config.weights is None
    assert config.labels == SimpleLabels(("is_top", "is_qcd"))
    assert config.labels.names == ("_label_",)
    assert config.observers == ("jet_pt", "jet_eta", "jet_nparticles")
    assert config.new_variables[0] == NewVariable("is_constituent", "ak.ones_like(part_energy)")
    assert config.expressions["log_pt_fraction"] == "np.log(constituent_pt / jet_pt)"
    assert config.source == WRAP
    assert not config.pending_standardization
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.selection = "jet_pt > 0"  # type: ignore[misc]


def _group_config(method: str) -> dict[str, Any]:
    variables = ["a", ["b"], ["c", 1], ["d", 1, 2, -1, 1, 9], ["e", None], ["f", "auto", 3]]
    return {
        "preprocess": {"method": method},
        "inputs": {"x": {"length": 4, "vars": variables}},
        "labels": {"type": "simple", "value": ["a"]},
    }


@pytest.mark.parametrize("method", ["manual", "auto"])
def test_variable_formats_follow_weaver(method: str) -> None:
    config = parse_weaver_config(_group_config(method))
    weaver = DataConfig(print_info=False, **copy.deepcopy(_group_config(method)))
    group = config.inputs[0]
    assert group.pad_mode == "constant"
    for variable in group.variables:
        params = weaver.preprocess_params[variable.name]
        assert (variable.center, variable.scale, variable.clip_min, variable.clip_max) == (
            params["center"],
            params["scale"],
            params["min"],
            params["max"],
        )
        assert (variable.pad_value, group.length) == (params["pad_value"], params["length"])
    expected_pending = ("a", "b", "f") if method == "auto" else ("f",)
    assert config.pending_standardization == expected_pending


def test_unknown_keys_are_named_with_a_suggestion(raw: dict[str, Any]) -> None:
    raw["obsevers"] = raw.pop("observers")
    raw["inputs"]["pf_points"]["lenght"] = 128
    raw["preprocess"]["fraction"] = 0.5
    message = _problems(raw)
    assert "test config is invalid (3 problem(s))" in message
    assert "`top level`: unknown key 'obsevers'; did you mean 'observers'?" in message
    assert "`inputs.pf_points`: unknown key 'lenght'; did you mean 'length'?" in message
    assert "`preprocess`: unknown key 'fraction'" in message


def test_every_problem_is_reported_at_once(raw: dict[str, Any]) -> None:
    raw["preprocess"]["method"] = "automatic"
    raw["inputs"]["pf_mask"]["pad_mode"] = "wrap"
    raw["inputs"]["pf_momenta"]["pad_mode"] = "repeat"
    raw["inputs"]["pf_features"]["vars"][0] = ["log_pt", "1.7"]
    raw["new_variables"]["constituent_pt"] = "np.hypot(part_px, part_py"
    raw["labels"]["type"] = "multiclass"
    raw["monitor_variables"] = ["jet_pt"]
    message = _problems(raw)
    assert "(7 problem(s))" in message
    assert "`preprocess.method` must be 'manual' or 'auto', got 'automatic'" in message
    assert "`inputs.pf_mask.pad_mode` must be 'constant' for a mask input" in message
    assert "`inputs.pf_momenta.pad_mode` must be 'constant' or 'wrap', got 'repeat'" in message
    assert "`inputs.pf_features.vars[0] center` must be a number, got '1.7'" in message
    assert "`new_variables.constituent_pt`: `np.hypot(part_px, part_py` is not a valid" in message
    assert "`labels.type` must be 'simple'" in message
    assert "`observers` and `monitor_variables` are both set" in message


def test_a_variable_needs_one_setting_in_every_group(raw: dict[str, Any]) -> None:
    raw["inputs"]["pf_points"]["vars"][0] = ["part_deta", 0.0, 2.0]
    message = _problems(raw)
    assert "'part_deta' is in `inputs.pf_points` and `inputs.pf_features`" in message


@pytest.mark.parametrize("source", [WRAP, config_files.AUTO_WEIGHTED, config_files.EXAMPLE])
def test_round_trip_through_weavers_format(source: Path, tmp_path: Path) -> None:
    config = load_weaver_config(source)
    path = write_weaver_config(config, tmp_path / "again.yaml")
    again = load_weaver_config(path)
    assert again == config
    assert again.source == path
    original, written = DataConfig.load(str(source)), DataConfig.load(str(path))
    assert written.preprocess_params == original.preprocess_params
    assert written.var_funcs == original.var_funcs
    assert written.input_dicts == original.input_dicts


def test_params_of_an_auto_yaml_take_precedence(raw: dict[str, Any]) -> None:
    raw["preprocess"] = {"method": "auto", "data_fraction": 0.5, "params": {}}
    for group in raw["inputs"].values():
        for entry in group["vars"]:
            raw["preprocess"]["params"][entry[0]] = {
                "length": group["length"],
                "pad_mode": group.get("pad_mode", "constant"),
                "center": 0.5 if entry[0] == "part_px" else None,
                "scale": 2.0,
                "min": -3,
                "max": 3,
                "pad_value": 0,
            }
    config = parse_weaver_config(raw)
    assert config.variables["part_px"] == InputVariable("part_px", 0.5, 2.0, -3.0, 3.0, 0.0)
    assert not config.pending_standardization

    del raw["preprocess"]["params"]["part_dphi"]
    raw["preprocess"]["params"]["part_charge"] = raw["preprocess"]["params"]["part_px"]
    message = _problems(raw)
    assert "`preprocess.params.part_dphi` is missing but part_dphi is in" in message
    assert "`preprocess.params.part_charge` is not an input variable" in message


def test_weights_sections(raw: dict[str, Any]) -> None:
    raw["weights"] = {"use_precomputed_weights": True, "weight_branches": ["w1", "w2"]}
    assert parse_weaver_config(raw).weights == PrecomputedWeights(("w1", "w2"))

    raw["weights"] = {
        "use_precomputed_weights": False,
        "reweight_method": "flat",
        "reweight_vars": {"jet_pt": [500, 600, 700], "jet_eta": [-2, 0, 2]},
        "reweight_classes": ["is_top", "is_qcd"],
        "reweight_hists": {"is_top": [[1, 2], [3, 4]], "is_qcd": [[1, 1], [1, 1]]},
    }
    weights = parse_weaver_config(raw).weights
    assert isinstance(weights, Reweighting)
    assert (weights.x_var, weights.y_var, weights.threshold) == ("jet_pt", "jet_eta", 10.0)
    assert weights.class_weights == (1.0, 1.0)
    assert weights.hist_arrays()["is_top"].tolist() == [[1, 2], [3, 4]]

    raw["weights"]["reweight_hists"]["is_qcd"] = [[1, 1, 1]]
    raw["weights"]["reweight_method"] = "flatten"
    message = _problems(raw)
    assert "`weights.reweight_method` must be 'flat' or 'ref', got 'flatten'" in message
    assert "`weights.reweight_hists.is_qcd` must be a 2 x 2 table of numbers" in message


def test_custom_labels_and_self_mappings(raw: dict[str, Any]) -> None:
    raw["labels"] = {"type": "custom", "value": {"truth": "label", "flipped": "1 - label"}}
    raw["new_variables"]["jet_pt"] = "jet_pt"
    config = parse_weaver_config(raw)
    assert config.labels == CustomLabels(
        (NewVariable("truth", "label"), NewVariable("flipped", "1 - label"))
    )
    assert config.labels.names == ("truth", "flipped")
    assert "jet_pt" not in config.expressions


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_weaver_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("inputs: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_weaver_config(broken)
    assert str(broken) in str(caught.value)
    assert "not valid YAML at line" in str(caught.value)


def test_auto_config_path_uses_weavers_name(tmp_path: Path) -> None:
    path = tmp_path / "jets.yaml"
    path.write_bytes(WRAP.read_bytes())
    digest = hashlib.md5(WRAP.read_bytes()).hexdigest()
    assert auto_config_path(path) == tmp_path / f"jets.{digest}.auto.yaml"
    assert auto_config_path(auto_config_path(path)) == auto_config_path(path)


def test_mapping_has_params_only_once_standardised() -> None:
    config = parse_weaver_config(_group_config("auto"))
    assert "params" not in to_weaver_mapping(config)["preprocess"]
