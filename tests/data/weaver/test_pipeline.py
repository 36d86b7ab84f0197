"""Files or tables + a weaver data config -> weaver's arrays: layout, semantics and errors.

Array legend (suffixes give the shape): N jets, C channels, P particle slots (128).
"""

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.data import config_files
from tests.data.test_readers import write_root
from trainyard.data.features import build_particlenet_inputs, load_jet_arrays
from trainyard.data.reader import read_jet_table, resolve_files
from trainyard.data.weaver.parser import load_weaver_config, parse_weaver_config
from trainyard.data.weaver.pipeline import build_arrays, load_arrays, prepare_config
from trainyard.data.weaver.writer import auto_config_path
from trainyard.datasets import schema
from trainyard.errors import ConfigError, DataError

WRAP = config_files.WRAP
SHARD = "toy-s21-0000.parquet"


@pytest.fixture(scope="module")
def table(toy_dir: Path) -> pa.Table:
    return read_jet_table(resolve_files("*.parquet", base_dir=toy_dir), schema.ALL_COLUMNS)


@pytest.fixture(scope="module")
def wrap_arrays(toy_dir: Path) -> dict[str, np.ndarray]:
    return load_arrays("*.parquet", WRAP, base_dir=toy_dir)


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(WRAP.read_text())


def _config(raw: dict[str, Any]) -> Any:
    return parse_weaver_config(copy.deepcopy(raw))


def test_the_wrap_config_on_toy_parquet(
    wrap_arrays: dict[str, np.ndarray], table: pa.Table
) -> None:
    arrays = wrap_arrays
    groups = ["_pf_points", "_pf_features", "_pf_momenta", "_pf_mask", "_jet"]
    assert sorted(arrays) == sorted([*groups, "_label_", "jet_pt", "jet_eta", "jet_nparticles"])
    for name, shape in [
        ("_pf_points", (2, 128)),
        ("_pf_features", (7, 128)),
        ("_pf_momenta", (3, 64)),
        ("_pf_mask", (1, 128)),
        ("_jet", (2,)),
    ]:
        assert arrays[name].shape == (500, *shape), name
        assert arrays[name].dtype == np.float32
    assert arrays["_label_"].dtype == np.int64
    labels_N = table.column(schema.LABEL).to_numpy()
    assert np.array_equal(arrays["_label_"], 1 - labels_N)  # class 0 is is_top
    assert np.array_equal(arrays["jet_pt"], table.column(schema.JET_PT).to_numpy())

    counts_N = table.column(schema.JET_NPARTICLES).to_numpy()
    assert np.array_equal(arrays["_pf_mask"].sum(axis=(1, 2)), np.minimum(counts_N, 128))
    # pad_mode wrap: the slots after the last particle repeat the jet's particles.
    jet = int(np.flatnonzero(counts_N < 40)[0])
    points_CP = arrays["_pf_points"][jet]
    assert np.array_equal(points_CP[:, counts_N[jet] :], points_CP[:, : 128 - counts_N[jet]])
    # pad_mode constant: the slots after the last particle hold the variable's pad_value.
    px = np.float32(table.column(schema.PART_PX)[jet].as_py())
    np.testing.assert_array_equal(arrays["_pf_momenta"][jet, 0, : counts_N[jet]], px * 0.01)
    assert (arrays["_pf_momenta"][jet, :, counts_N[jet] :] == -1).all()
    jet_pt_N = table.column(schema.JET_PT).to_numpy()
    np.testing.assert_allclose(arrays["_jet"][:, 0], (np.log(jet_pt_N) - 6.4) * 4, rtol=1e-5)


def test_wrapped_features_equal_the_builtin_inputs_where_there_is_a_particle(
    wrap_arrays: dict[str, np.ndarray], table: pa.Table
) -> None:
    ours = build_particlenet_inputs(table, max_particles=128)
    is_real_N1P = ours.mask_N1P.astype(bool)
    for name, expected in [("_pf_features", ours.features_NCP), ("_pf_points", ours.points_NCP)]:
        got = wrap_arrays[name]
        np.testing.assert_array_equal(
            np.where(is_real_N1P, got, 0), np.where(is_real_N1P, expected, 0), err_msg=name
        )


def test_the_example_config_builds_exactly_the_builtin_inputs(toy_dir: Path) -> None:
    """examples/particlenet-weaver-config.yaml trains on the same arrays as the built-in inputs."""
    arrays = load_arrays("*.parquet", config_files.EXAMPLE, base_dir=toy_dir)
    builtin = load_jet_arrays("*.parquet", base_dir=toy_dir, max_particles=128)
    np.testing.assert_array_equal(arrays["_pf_points"], builtin.points_NCP)
    np.testing.assert_array_equal(arrays["_pf_features"], builtin.features_NCP)
    np.testing.assert_array_equal(arrays["_pf_mask"], builtin.mask_N1P)
    np.testing.assert_array_equal(arrays["_label_"], 1 - builtin.labels_N)  # top is class 0


def test_build_arrays_takes_arrow_or_awkward(toy_dir: Path) -> None:
    shard = pq.read_table(toy_dir / SHARD)
    config = load_weaver_config(WRAP)
    from_arrow = build_arrays(shard, config)
    from_awkward = build_arrays(ak.from_arrow(shard), config)
    from_file = load_arrays(toy_dir / SHARD, config)
    for name, array in from_file.items():
        assert np.array_equal(from_arrow[name], array)
        assert np.array_equal(from_awkward[name], array)
    with pytest.raises(DataError, match="needs a table with named columns"):
        build_arrays(ak.Array([1, 2]), config)


def test_root_files_give_the_same_arrays(toy_dir: Path, tmp_path: Path) -> None:
    path = write_root(tmp_path / "jets.root", pq.read_table(toy_dir / SHARD), "Jets")
    from_root = load_arrays(path, WRAP, treename="Jets")
    from_parquet = load_arrays(toy_dir / SHARD, WRAP)
    for name, array in from_parquet.items():
        assert np.array_equal(from_root[name], array)


def test_bad_files_stop_the_load_or_are_skipped(
    toy_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = (toy_dir / SHARD).read_bytes()
    bad = tmp_path / "truncated.parquet"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=f"{bad} could not be read as Parquet"):
        load_arrays([toy_dir / SHARD, bad], WRAP)
    with caplog.at_level(logging.WARNING, logger="trainyard.data.reader"):
        arrays = load_arrays([toy_dir / SHARD, bad], WRAP, skip_bad_files=True)
    assert len(arrays["_label_"]) == 200
    assert f"skipping unreadable file {bad}" in caplog.text


def test_selection_in_training_and_test_time_selection_otherwise(
    raw: dict[str, Any], table: pa.Table
) -> None:
    raw["selection"] = "(jet_pt > 600) & (log_pt[:, 0] > 3)"
    raw["test_time_selection"] = "jet_eta > 0"
    config = _config(raw)
    pt_N, eta_N = table.column("jet_pt").to_numpy(), table.column("jet_eta").to_numpy()
    leading_N = np.log(
        np.hypot(
            [px[0] for px in table.column("part_px").to_pylist()],
            [py[0] for py in table.column("part_py").to_pylist()],
        )
    )
    training = build_arrays(table, config, training=True)
    assert len(training["_label_"]) == int(((pt_N > 600) & (leading_N > 3)).sum())
    assert np.array_equal(build_arrays(table, config)["jet_eta"], eta_N[eta_N > 0])


def test_selection_keeping_nothing_names_selection_and_files(
    raw: dict[str, Any], toy_dir: Path
) -> None:
    raw["selection"] = "jet_pt > 1e6"
    with pytest.raises(DataError) as caught:
        load_arrays("*.parquet", _config(raw), base_dir=toy_dir)
    message = str(caught.value)
    assert "`selection` `jet_pt > 1e6` keeps none of the 500 events" in message
    for name in ("toy-s21-0000.parquet", "toy-s21-0001.parquet", "toy-s21-0002.parquet"):
        assert str(toy_dir / name) in message


def test_unknown_variable_is_named_with_branches_and_suggestion(
    raw: dict[str, Any], toy_dir: Path, table: pa.Table
) -> None:
    raw["inputs"]["pf_momenta"]["vars"][0] = ["part_pxx", 0, 0.01, -10, 10, -1]
    raw["new_variables"]["constituent_pt"] = "np.hypot(part_px, part_pyy)"
    with pytest.raises(DataError) as from_file:
        load_arrays(toy_dir / SHARD, _config(raw))
    with pytest.raises(DataError) as from_table:
        build_arrays(table, _config(raw))
    assert f"is neither a branch of {toy_dir / SHARD} nor a new_variable" in str(from_file.value)
    assert "is neither a branch of the given table" in str(from_table.value)
    for message in (str(from_file.value), str(from_table.value)):
        assert "'part_pxx' (needed by inputs.pf_momenta) is neither" in message
        assert "did you mean 'part_px'?" in message
        assert "'part_pyy' (needed by inputs.pf_features via new_variables.log_pt" in message
        assert "available branches: [" in message and "'part_dphi'" in message


def test_new_variable_cycle_and_failing_expression(raw: dict[str, Any], table: pa.Table) -> None:
    raw["new_variables"]["constituent_pt"] = "log_pt * 2"
    with pytest.raises(ConfigError, match="cycle: log_pt -> constituent_pt -> log_pt"):
        build_arrays(table, _config(raw))
    raw["new_variables"]["constituent_pt"] = "np.hypo(part_px, part_py)"
    with pytest.raises(ConfigError) as caught:
        build_arrays(table, _config(raw))
    assert "`new_variables.constituent_pt`: evaluating `np.hypo(part_px, part_py)` failed" in str(
        caught.value
    )
    assert "AttributeError" in str(caught.value)


def test_training_checks_that_each_event_has_one_class(
    raw: dict[str, Any], table: pa.Table
) -> None:
    raw["labels"]["value"] = ["is_top", "is_top"]
    config = _config(raw)
    assert len(build_arrays(table, config)["_label_"]) == 500
    with pytest.raises(DataError, match=r"exactly one class per event .* several"):
        build_arrays(table, config, training=True)


def test_custom_labels_scalar_groups_and_constant_padding(table: pa.Table) -> None:
    config = parse_weaver_config(
        {
            "new_variables": {"n": "ak.num(part_px)", "twice_label": "label * 2"},
            "inputs": {
                "jets": {"length": None, "vars": [["jet_pt", 600, 0.1], "jet_eta"]},
                "count": {"length": None, "vars": ["n"]},
                "parts": {"length": 24, "vars": [["part_deta", None, 1, -5, 5, 9.5]]},
            },
            "labels": {"type": "custom", "value": {"truth": "twice_label // 2"}},
            "monitor_variables": ["jet_mass", "part_deta"],
        }
    )
    arrays = build_arrays(table, config)
    pt_N = table.column("jet_pt").to_numpy()
    assert arrays["_jets"].shape == (500, 2)
    assert np.array_equal(arrays["_jets"][:, 0], np.clip((pt_N - 600) * np.float32(0.1), -5, 5))
    assert np.array_equal(arrays["_count"], table.column("jet_nparticles").to_numpy())
    assert np.array_equal(arrays["truth"], table.column("label").to_numpy())
    deta_N = table.column("part_deta").to_pylist()
    short = int(np.flatnonzero(table.column("jet_nparticles").to_numpy() < 24)[0])
    expected = [*deta_N[short], *[9.5] * (24 - len(deta_N[short]))]
    np.testing.assert_array_equal(arrays["_parts"][short, 0], np.float32(expected))
    np.testing.assert_array_equal(arrays["_parts"][0, 0], np.float32(deta_N[0][:24]))
    assert arrays["part_deta"].shape == (500, 24)  # an input variable is monitored padded
    assert arrays["jet_mass"].shape == (500,)


def test_nan_becomes_zero_and_inf_the_largest_float(table: pa.Table) -> None:
    config = parse_weaver_config(
        {
            "new_variables": {
                "infinite": "part_px / 0",
                "infinite_copy": "part_px / 0",
                "missing": "part_px * np.nan",
            },
            "inputs": {
                "x": {
                    "length": 4,
                    "vars": [["infinite", None], ["infinite_copy", 0, 1, -3, 3], ["missing", 0]],
                }
            },
            "labels": {"type": "simple", "value": ["label", "1 - label"]},
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        arrays = build_arrays(table, config)
    sign_NP = np.sign(np.float32([row[:4] for row in table.column("part_px").to_pylist()]))
    np.testing.assert_array_equal(arrays["_x"][:, 0], sign_NP * np.finfo(np.float32).max)
    np.testing.assert_array_equal(arrays["_x"][:, 1], sign_NP * 3)
    np.testing.assert_array_equal(arrays["_x"][:, 2], 0)
    assert np.array_equal(arrays["_label_"], 1 - table.column("label").to_numpy())


def test_precomputed_weights_come_with_training_only(raw: dict[str, Any], table: pa.Table) -> None:
    raw["weights"] = {"use_precomputed_weights": True, "weight_branches": ["jet_pt", "2"]}
    config = _config(raw)
    assert "_weight_" not in build_arrays(table, config)
    weights_N = build_arrays(table, config, training=True)["_weight_"]
    assert weights_N.dtype == np.float32
    assert np.array_equal(weights_N, table.column("jet_pt").to_numpy() * 2)


def copy_auto_weighted(folder: Path) -> Path:
    """The auto-weighted config copied into ``folder``, where training writes its *.auto.yaml."""
    return Path(shutil.copy(config_files.AUTO_WEIGHTED, folder / "jets-auto.yaml"))


def test_auto_standardisation_is_written_and_reused(
    toy_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = copy_auto_weighted(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_arrays("*.parquet", path, base_dir=toy_dir)
    assert "centers of ['log_pt', 'log_energy', 'log_energy_fraction']" in str(caught.value)
    assert "training=True" in str(caught.value)
    with pytest.raises(ConfigError, match="still 'auto'"):
        build_arrays(pq.read_table(toy_dir / SHARD), load_weaver_config(path))

    with caplog.at_level(logging.INFO, logger="trainyard.data"):
        training = load_arrays("*.parquet", path, base_dir=toy_dir, training=True)
    auto_path = auto_config_path(path)
    assert auto_path.is_file() and str(auto_path) in caplog.text
    completed = load_weaver_config(auto_path)
    assert not completed.pending_standardization
    assert completed.weights.hists is not None
    assert completed.variables["is_constituent"].center is None
    assert completed.variables["part_deta"].center is None
    assert completed.variables["log_pt_fraction"].center == -4.7  # given, so kept
    assert isinstance(completed.variables["log_pt"].center, float)
    test = load_arrays("*.parquet", path, base_dir=toy_dir)
    assert sorted(training) == sorted([*test, "_weight_"])
    for name, array in test.items():
        assert np.array_equal(training[name], array)
    assert np.abs(test["_pf_features"][:, :5]).max() <= 5


def test_prepare_config_without_a_file_writes_only_when_asked(
    toy_dir: Path, tmp_path: Path
) -> None:
    path = copy_auto_weighted(tmp_path)
    in_memory = _config(yaml.safe_load(path.read_text()))
    completed = prepare_config("*.parquet", in_memory, base_dir=toy_dir)
    assert completed.source is None and not completed.pending_standardization
    assert list(tmp_path.iterdir()) == [path]
    target = tmp_path / "done.yaml"
    assert prepare_config("*.parquet", path, output=target, base_dir=toy_dir).source == target
    assert load_weaver_config(target) == completed


def test_reweighting_histograms_are_made_in_training(
    raw: dict[str, Any], toy_dir: Path, tmp_path: Path
) -> None:
    raw["weights"] = {
        "use_precomputed_weights": False,
        "reweight_method": "flat",
        "reweight_vars": {"jet_pt": [550, 575, 600, 625, 650], "jet_eta": [-2, -1, 0, 1, 2]},
        "reweight_classes": ["is_top", "is_qcd"],
        "reweight_threshold": 15,
    }
    path = tmp_path / "weighted.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "_weight_" not in load_arrays("*.parquet", path, base_dir=toy_dir)
    arrays = load_arrays("*.parquet", path, base_dir=toy_dir, training=True)
    weights_N = arrays["_weight_"]
    assert weights_N.shape == (500,) and (weights_N >= 0).all() and (weights_N > 0).any()
    completed = load_weaver_config(auto_config_path(path))
    assert completed.weights.hists is not None
    with pytest.raises(ConfigError, match="reweight_hists` have not been made"):
        build_arrays(pq.read_table(toy_dir / SHARD), load_weaver_config(path), training=True)
