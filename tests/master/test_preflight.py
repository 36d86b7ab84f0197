"""Problems found before anything is queued: each gets a message that says what to fix."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from trainyard.config import parse_experiment
from trainyard.errors import ConfigError
from trainyard.master.preflight import preflight


def _config(root: Path, **overrides: Any) -> Any:
    raw = {
        "name": "pre",
        "model": "particlenet-lite",
        "data": {"train": str(root / "train/*.parquet"), "val": str(root / "val/*.parquet")},
        "training": {"max_length": {"epochs": 1}},
        **overrides,
    }
    return parse_experiment(raw)


def _problems(config: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    return str(caught.value)


def test_a_good_experiment_passes(data: Path) -> None:
    preflight(_config(data, hyperparameters={"lr": 0.01, "k": 5}))


def test_data_path_matching_no_file_is_named(data: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere/*.parquet")
    message = _problems(_config(data, data={"train": missing, "val": str(data / "val/*.parquet")}))
    assert "`data.train`:" in message
    assert "nowhere/*.parquet" in message
    assert "trainyard data generate toy" in message


def test_unknown_zoo_model_lists_known_models(data: Path) -> None:
    message = _problems(_config(data, model="particlenet-lit"))
    assert "`model.name`:" in message
    assert "particlenet-lite" in message and "mlp" in message


def test_user_entry_point_that_fails_to_import_shows_its_traceback(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_model.py").write_text(
        textwrap.dedent(
            """
            import torch

            def build(num_features, num_classes):
                return torch.nn.Linear(num_features, num_classes)

            raise RuntimeError("oops in my model file")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _problems(_config(data, model="broken_model:build"))
    assert "broken_model" in message
    assert "oops in my model file" in message
    assert "Traceback" in message and "broken_model.py" in message


def test_hyperparameter_used_by_nothing(data: Path) -> None:
    message = _problems(_config(data, hyperparameters={"dropuot": 0.2}))
    assert "`hyperparameters.dropuot`: used by neither the training loop" in message
    assert "dropout" in message


def test_metric_no_trial_reports(data: Path) -> None:
    message = _problems(_config(data, searcher={"metric": "val_f1"}))
    assert "`searcher.metric`: no trial reports 'val_f1'" in message


def test_search_without_max_trials_asks_for_it(data: Path) -> None:
    space = {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}}
    message = _problems(_config(data, searcher={"name": "asha"}, hyperparameters=space))
    assert "`searcher.max_trials`: searcher `asha` needs the number of trials to run" in message


def test_grid_over_a_continuous_range_needs_a_count(data: Path) -> None:
    space = {
        "lr": {"type": "log", "min": 1e-4, "max": 1e-2},
        "k": {"type": "int", "min": 4, "max": 5},
    }
    message = _problems(_config(data, searcher={"name": "grid"}, hyperparameters=space))
    assert "`hyperparameters.lr`: a grid over a continuous log range needs `count`" in message
    assert "count: 4" in message


def test_search_space_optuna_cannot_represent(data: Path) -> None:
    space = {"conv_channels": {"type": "categorical", "vals": [[[32, 32, 32]], [[64, 64, 64]]]}}
    config = _config(data, searcher={"name": "random", "max_trials": 2}, hyperparameters=space)
    message = _problems(config)
    assert "`hyperparameters.conv_channels.vals`: [[32, 32, 32]] is a list" in message
    assert "Optuna can only choose among None, bool, int, float and str values" in message


def test_more_slots_per_trial_than_the_pool_has(data: Path) -> None:
    config = _config(data, resources={"slots_per_trial": 4})
    with pytest.raises(ConfigError) as caught:
        preflight(config, pool_capacity=2)
    assert "`resources.slots_per_trial`: 4 slots per trial but the pool has 2" in str(caught.value)


def test_search_space_with_single_searcher(data: Path) -> None:
    message = _problems(
        _config(data, hyperparameters={"lr": {"type": "log", "min": 1e-4, "max": 1e-2}})
    )
    assert "`hyperparameters.lr`: searcher `single` trains one configuration" in message


def test_all_problems_at_once(data: Path, tmp_path: Path) -> None:
    config = _config(
        data,
        model="nope",
        data={"train": str(tmp_path / "x/*.parquet"), "val": str(tmp_path / "y/*.parquet")},
        searcher={"metric": "val_f1"},
    )
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    assert len(caught.value.problems) == 4


WEAVER_CONFIG = Path(__file__).parents[1] / "data" / "configs" / "jets-wrap.yaml"


def _weaver_data(root: Path, config: Path | str = WEAVER_CONFIG, **keys: Any) -> dict[str, Any]:
    return {
        "train": str(root / "train/*.parquet"),
        "val": str(root / "val/*.parquet"),
        "config": str(config),
        **keys,
    }


def test_a_weaver_data_config_passes(data: Path) -> None:
    preflight(_config(data, data=_weaver_data(data)))


def test_missing_data_config_is_named(data: Path, tmp_path: Path) -> None:
    message = _problems(_config(data, data=_weaver_data(data, tmp_path / "nope.yaml")))
    assert f"`data.config` ({tmp_path / 'nope.yaml'}): no such file" in message


def test_data_config_problems_keep_their_key_paths(data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = WEAVER_CONFIG.read_text().replace("length: 128", "length: -3", 1)
    broken.write_text(text.replace("pad_mode: wrap", "pad_mode: zigzag", 1))
    message = _problems(_config(data, data=_weaver_data(data, broken)))
    assert f"`data.config` ({broken}): `inputs.pf_points.length` must be a positive" in message
    assert f"`data.config` ({broken}): `inputs.pf_points.pad_mode` must be" in message


def test_mapped_input_group_missing_from_the_data_config(data: Path) -> None:
    mapping = {"points": "pf_point", "features": "pf_features", "mask": "pf_mask"}
    message = _problems(_config(data, data=_weaver_data(data, inputs=mapping)))
    assert (
        f"`data.inputs.points`: the data config {WEAVER_CONFIG} has no input group 'pf_point'; "
        "its groups are pf_points, pf_features, pf_momenta, pf_mask, jet"
    ) in message


def test_mask_group_must_have_one_variable(data: Path) -> None:
    mapping = {"points": "pf_points", "features": "pf_features", "mask": "pf_momenta"}
    message = _problems(_config(data, data=_weaver_data(data, inputs=mapping)))
    assert "`data.inputs.mask`: input group 'pf_momenta'" in message
    assert "has 3 variables; a mask has exactly one" in message


def test_signal_class_must_be_a_class_of_the_config(data: Path) -> None:
    message = _problems(_config(data, data=_weaver_data(data, signal_class=2)))
    assert "`data.signal_class`: 2 is not a class of" in message
    assert "['is_top', 'is_qcd'] has classes 0 to 1" in message
    builtin = {"train": str(data / "train/*.parquet"), "val": str(data / "val/*.parquet")}
    message = _problems(_config(data, data={**builtin, "signal_class": 2}))
    assert "`data.signal_class`: the built-in inputs have classes 0 (QCD) and 1 (top)" in message


def test_batch_size_must_split_over_the_slots(data: Path) -> None:
    config = _config(
        data, resources={"slots_per_trial": 3}, training={"max_length": {"epochs": 1}}
    )
    message = _problems(config)  # the default batch_size: 256
    assert (
        "`training.batch_size`: the global batch of 256 does not split evenly over "
        "resources.slots_per_trial = 3 ranks; choose a multiple of 3"
    ) in message


def test_every_batch_size_a_search_can_pick_must_split_over_the_slots(data: Path) -> None:
    grid = {"name": "grid"}
    choices = {"batch_size": {"type": "categorical", "vals": [64, 96, 98]}}
    config = _config(
        data, resources={"slots_per_trial": 4}, searcher=grid, hyperparameters=choices
    )
    problems = _problems(config)
    assert (
        "`hyperparameters.batch_size`: the global batch of 98 does not split evenly over "
        "resources.slots_per_trial = 4 ranks"
    ) in problems
    assert "batch of 64" not in problems and "batch of 96" not in problems
    ranged = {"batch_size": {"type": "int", "min": 64, "max": 128}}
    config = _config(data, resources={"slots_per_trial": 2}, searcher=grid, hyperparameters=ranged)
    assert (
        "`hyperparameters.batch_size`: the int range 64 to 128 includes batch sizes that do not "
        "split evenly over resources.slots_per_trial = 2 ranks (e.g. 65)"
    ) in _problems(config)
    preflight(
        _config(
            data,
            resources={"slots_per_trial": 2},
            searcher=grid,
            hyperparameters={"batch_size": {"type": "categorical", "vals": [64, 128]}},
        )
    )


def test_batch_size_from_a_real_valued_range_is_refused(data: Path) -> None:
    space = {"batch_size": {"type": "log", "min": 32, "max": 512}}
    config = _config(data, searcher={"name": "random", "max_trials": 2}, hyperparameters=space)
    assert (
        "`hyperparameters.batch_size`: a log range can pick batch sizes that are not whole "
        "numbers; use an int range or categorical values"
    ) in _problems(config)


def test_optimizer_values_torch_refuses_are_named_by_their_hyperparameter(data: Path) -> None:
    problems = _problems(
        _config(
            data,
            hyperparameters={
                "lr": -1,
                "momentum": {"type": "double", "min": 0.5, "max": 1.5},
                "weight_decay": {"type": "categorical", "vals": [0.1, -0.2]},
            },
        )
    )
    assert "`hyperparameters.lr`: Input should be greater than 0 (got -1)" in problems
    assert "sets `training.optimizer.lr`" in problems
    assert "`hyperparameters.momentum`: Input should be less than 1 (got 1.5)" in problems
    assert "`hyperparameters.weight_decay`: Input should be greater than or equal to 0 " in (
        problems
    )
    assert "(got -0.2)" in problems


def test_a_model_with_the_wrong_output_shape_fails_before_queueing(data: Path) -> None:
    name = "tests.models.user_models:one_score"
    builtin = {"train": str(data / "train/*.parquet"), "val": str(data / "val/*.parquet")}
    message = _problems(_config(data, model=name, data={**builtin, "max_particles": 16}))
    assert (
        f"`model`: model '{name}' returned shape (3,) for a batch of 3 jets, but must return "
        "logits of shape (B, num_classes) = (3, 2)"
    ) in message
    name = "tests.models.user_models:wrong_feature_count"
    message = _problems(_config(data, model=name, data={**builtin, "max_particles": 16}))
    assert "points (3, 2, 16), features (3, 7, 16) and mask (3, 1, 16)" in message


TINY_PART = {"embed_dims": [8], "pair_embed_dims": [4], "num_heads": 2, "num_layers": 1}
PART_CONFIG = Path(__file__).parents[2] / "examples" / "configs" / "part-inputs.yaml"


def _part(root: Path, **overrides: Any) -> Any:
    return _config(root, model={"name": "particle-transformer", "options": TINY_PART}, **overrides)


def test_part_and_pfn_pass_with_the_builtin_inputs_and_a_vectors_group(data: Path) -> None:
    builtin = {"train": str(data / "train/*.parquet"), "val": str(data / "val/*.parquet")}
    preflight(_part(data, data={**builtin, "max_particles": 16}))
    preflight(_config(data, model="pfn", data={**builtin, "max_particles": 16}))
    mapping = {"features": "pf_features", "vectors": "pf_vectors", "mask": "pf_mask"}
    preflight(_part(data, data=_weaver_data(data, PART_CONFIG, inputs=mapping)))


def test_a_model_taking_vectors_needs_a_vectors_group(data: Path) -> None:
    message = _problems(_part(data, data=_weaver_data(data)))
    assert (
        "`data.inputs.vectors`: model 'particle-transformer' is called as forward(features, "
        "vectors, mask) and needs per-particle Lorentz vectors, but `data.inputs.vectors` is "
        f"not set; set it to the input group of {WEAVER_CONFIG} with the 4 variables px, py, "
        "pz, energy (its groups are pf_points, pf_features, pf_momenta, pf_mask, jet)"
    ) in message


def test_a_vectors_group_needs_four_variables(data: Path) -> None:
    mapping = {"vectors": "pf_momenta"}
    message = _problems(_part(data, data=_weaver_data(data, inputs=mapping)))
    assert (
        f"`data.inputs.vectors`: input group 'pf_momenta' of {WEAVER_CONFIG} has 3 variables "
        "(part_px, part_py, part_energy); Lorentz vectors need exactly 4, in the order px, "
        "py, pz, energy"
    ) in message


def test_a_model_packs_do_not_feed_cannot_be_packed(data: Path) -> None:
    builtin = {"train": str(data / "train/*.parquet"), "val": str(data / "val/*.parquet")}
    config = _part(data, data={**builtin, "max_particles": 16}, resources={"pack": 2})
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    assert caught.value.problems == [
        "`resources.pack`: model 'particle-transformer' is called as forward(features, "
        "vectors, mask), but packed trials are fed forward(points, features, mask) only, so "
        "`resources.pack: 2` cannot pack it; set `resources.pack` to off or auto (auto trains "
        "it one trial per worker)"
    ]
    preflight(_part(data, data={**builtin, "max_particles": 16}, resources={"pack": "auto"}))
