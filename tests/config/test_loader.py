"""The experiment file: what loads, and the message each mistake gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainyard.config import ExperimentConfig, load_experiment, parse_experiment
from trainyard.config.schema import Categorical, IntRange, LogRange
from trainyard.errors import ConfigError

_EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted(_EXAMPLES_DIR.glob("*.yaml")) + sorted(_EXAMPLES_DIR.glob("scripts/*/*.yaml"))

MINIMAL = {
    "name": "demo",
    "model": "particlenet-lite",
    "data": {"train": "train/*.parquet", "val": "val/*.parquet"},
    "training": {"max_length": {"epochs": 1}},
}


def _problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_experiment(raw)
    return str(caught.value)


def _with(section: str, **values: object) -> dict:
    return {**MINIMAL, section: {**MINIMAL.get(section, {}), **values}}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    config = load_experiment(path, base_dir=Path("/somewhere"))
    assert isinstance(config, ExperimentConfig)


def test_minimal_file_gets_defaults_and_model_shorthand() -> None:
    config = parse_experiment(MINIMAL)
    assert config.model.name == "particlenet-lite"
    assert config.searcher.name.value == "single"
    assert config.training.batch_size == 256
    assert config.checkpoint.keep == 2


def test_relative_data_paths_become_absolute(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(MINIMAL))
    config = load_experiment(file, base_dir=tmp_path / "runs")
    assert config.data.train == str(tmp_path / "runs" / "train/*.parquet")


def test_a_relative_network_file_becomes_absolute_and_zoo_names_stay(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump({**MINIMAL, "model": "networks/tagger.py"}))
    config = load_experiment(file, base_dir=tmp_path / "runs")
    assert config.model.name == str(tmp_path / "runs" / "networks/tagger.py")
    file.write_text(yaml.safe_dump({**MINIMAL, "model": "mypkg.tagger:build"}))
    assert load_experiment(file, base_dir=tmp_path).model.name == "mypkg.tagger:build"


def test_relative_data_config_becomes_absolute(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    data = {**MINIMAL["data"], "config": "configs/jets.yaml"}
    file.write_text(yaml.safe_dump({**MINIMAL, "data": data}))
    config = load_experiment(file, base_dir=tmp_path / "runs")
    assert config.data.config == str(tmp_path / "runs" / "configs/jets.yaml")


def test_weaver_only_keys_need_a_data_config_and_max_particles_does_not_go_with_one() -> None:
    message = _problems(_with("data", inputs={"points": "pf_coords"}))
    assert "`data`: `inputs` maps the input groups of a weaver data config" in message
    message = _problems(_with("data", config="c.yaml", max_particles=64))
    assert "`data`: `max_particles` is for the built-in inputs" in message


def test_misspelt_key_gets_did_you_mean() -> None:
    message = _problems(_with("training", bach_size=12))
    assert "`training.bach_size`: unknown key 'bach_size'; did you mean 'batch_size'?" in message


def test_misspelt_top_level_key_lists_allowed_keys() -> None:
    message = _problems({**MINIMAL, "hyperparameter": {}})
    assert "did you mean 'hyperparameters'?" in message
    assert "allowed keys here:" in message


def test_wrong_type_names_key_path_and_value() -> None:
    message = _problems(_with("training", batch_size="big"))
    assert "`training.batch_size`" in message
    assert "'big'" in message


def test_out_of_range_value_names_the_bound() -> None:
    message = _problems(_with("checkpoint", keep=0))
    assert "`checkpoint.keep`: Input should be greater than 0 (got 0)" in message


def test_bad_choice_lists_allowed_values_with_hint() -> None:
    message = _problems({**MINIMAL, "searcher": {"name": "asah"}})
    assert "`searcher.name`: 'asah' is not allowed; did you mean 'asha'?" in message
    assert "'single', 'grid', 'random', 'asha' or 'tpe'" in message


def test_every_problem_is_reported_at_once() -> None:
    raw = {**_with("training", optimizer={"name": "adamx"}), "resources": {"slots_per_trial": 0}}
    with pytest.raises(ConfigError) as caught:
        parse_experiment(raw)
    assert len(caught.value.problems) == 2


def test_missing_required_sections() -> None:
    message = _problems({"name": "demo"})
    for key in ("model", "data", "training"):
        assert f"`{key}`: required key is missing" in message


def test_length_needs_exactly_one_unit() -> None:
    message = _problems(_with("training", max_length={"epochs": 2, "batches": 5}))
    assert "`training.max_length`: give exactly one of `epochs` or `batches`" in message


def test_search_spaces_parse_into_typed_ranges() -> None:
    config = parse_experiment(
        {
            **MINIMAL,
            "hyperparameters": {
                "lr": {"type": "log", "min": 1e-4, "max": 1e-2},
                "k": {"type": "int", "min": 4, "max": 16},
                "opt": {"type": "categorical", "vals": ["a", "b"]},
                "dropout": 0.1,
            },
        }
    )
    hp = config.hyperparameters
    assert isinstance(hp["lr"], LogRange)
    assert isinstance(hp["k"], IntRange)
    assert isinstance(hp["opt"], Categorical)
    assert hp["dropout"] == 0.1
    assert config.search_space_names() == ["lr", "k", "opt"]


def test_search_space_errors_use_the_users_key_path() -> None:
    message = _problems(
        {**MINIMAL, "hyperparameters": {"lr": {"type": "log", "min": -1, "max": 1}}}
    )
    assert "`hyperparameters.lr.min`: Input should be greater than 0" in message


def test_unknown_search_space_type() -> None:
    message = _problems({**MINIMAL, "hyperparameters": {"k": {"type": "uniform"}}})
    assert "`hyperparameters.k`: a search space needs `type` set to one of int, double" in message


def test_reversed_range() -> None:
    message = _problems({**MINIMAL, "hyperparameters": {"k": {"type": "int", "min": 9, "max": 3}}})
    assert "min (9) is larger than max (3)" in message


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("name: demo\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_experiment(file)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file: .*nope\.yaml"):
        load_experiment(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        parse_experiment(["a", "b"])


def test_config_is_frozen() -> None:
    config = parse_experiment(MINIMAL)
    with pytest.raises(ValueError):
        config.name = "other"  # type: ignore[misc]
