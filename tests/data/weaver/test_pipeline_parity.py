"""Parity with weaver-core: the same files and config give exactly the arrays weaver makes.

weaver runs in test mode (no shuffling, no sampling) through the functions its SimpleIterDataset
calls (``_read_files``, then ``_preprocess``), so events keep file order and every array compares
one to one. All comparisons are exact (bit for bit), which is stronger than allclose.
"""

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import yaml

from tests.data.test_readers import write_root
from tests.data.weaver.test_pipeline import TOP_KIN, write_auto_top_kin
from trainyard.data.weaver.expressions import HELPERS
from trainyard.data.weaver.pipeline import load_arrays, prepare_config

weaver_dataset = pytest.importorskip("weaver.utils.dataset")
weaver_config = pytest.importorskip("weaver.utils.data.config")
weaver_fileio = pytest.importorskip("weaver.utils.data.fileio")
weaver_preprocess = pytest.importorskip("weaver.utils.data.preprocess")

TEST_MODE = {"training": False, "shuffle": False, "reweight": False, "mode": None}


@pytest.fixture(scope="module")
def files(toy_dir: Path) -> list[Path]:
    """All three shards (500 jets)."""
    return sorted(toy_dir.glob("toy-s21-*.parquet"))


@pytest.fixture(scope="module")
def shard(files: list[Path]) -> list[Path]:
    """One shard (200 jets), where weaver's slow per-jet Parquet path would dominate the run."""
    return files[:1]


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(TOP_KIN.read_text())


def weaver_arrays(
    files: list[Path], config_path: Path, treename: str | None = None
) -> dict[str, np.ndarray]:
    """weaver's arrays for ``files``, read and preprocessed as its test-mode dataset does."""
    config = weaver_config.DataConfig.load(str(config_path), load_reweight_info=False)
    table = weaver_fileio._read_files(
        [str(f) for f in files], config.test_load_branches, treename=treename
    )
    arrays, indices = weaver_dataset._preprocess(table, config, TEST_MODE)
    assert np.array_equal(indices, np.arange(len(indices)))
    return {name: np.asarray(array) for name, array in arrays.items()}


def assert_same_arrays(ours: dict[str, np.ndarray], weavers: dict[str, np.ndarray]) -> None:
    assert sorted(ours) == sorted(weavers)
    for name, array in weavers.items():
        assert ours[name].dtype == array.dtype, name
        np.testing.assert_array_equal(ours[name], array, err_msg=name)


def _write(tmp_path: Path, name: str, raw: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_top_kin_on_parquet(files: list[Path]) -> None:
    ours = load_arrays(files, TOP_KIN)
    assert sorted(ours) == [
        "_label_",
        "_pf_features",
        "_pf_mask",
        "_pf_points",
        "_pf_vectors",
        "jet_eta",
        "jet_pt",
    ]
    assert_same_arrays(ours, weaver_arrays(files, TOP_KIN))


def test_top_kin_on_root(files: list[Path], tmp_path: Path) -> None:
    """uproot's arrays take weaver's fused numba path, Parquet's its per-variable one."""
    import pyarrow.parquet as pq

    roots = [write_root(tmp_path / f"{f.stem}.root", pq.read_table(f)) for f in files]
    assert_same_arrays(load_arrays(roots, TOP_KIN), weaver_arrays(roots, TOP_KIN, "Events"))


def test_top_kin_with_auto_method(files: list[Path], raw: dict[str, Any], tmp_path: Path) -> None:
    """top_kin gives every center, so auto preprocessing changes nothing (the manual arrays are
    weaver's, see above, and test_weaver_config checks weaver's reading of auto entries)."""
    raw["preprocess"]["method"] = "auto"
    path = _write(tmp_path, "top_kin_auto.yaml", raw)
    ours = load_arrays(files, path, training=True)
    assert not list(tmp_path.glob("*.auto.yaml"))
    assert_same_arrays(ours, load_arrays(files, TOP_KIN))


def test_auto_standardisation(
    files: list[Path], shard: list[Path], raw: dict[str, Any], tmp_path: Path
) -> None:
    path = write_auto_top_kin(tmp_path, raw)
    ours_path, weavers_path = tmp_path / "ours.auto.yaml", tmp_path / "weavers.auto.yaml"
    ours = prepare_config(files, path, output=ours_path)
    standardizer = weaver_preprocess.AutoStandardizer(
        [str(f) for f in files], weaver_config.DataConfig.load(str(path))
    )
    weavers = standardizer.produce(str(weavers_path)).preprocess_params
    computed = ["part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR"]
    for name, variable in ours.variables.items():
        assert (variable.center, variable.scale) == (
            weavers[name]["center"],
            weavers[name]["scale"],
        ), name
        assert (variable.center is not None) == (name in computed), name

    expected = weaver_arrays(shard, weavers_path)
    assert_same_arrays(load_arrays(shard, ours_path), expected)
    assert_same_arrays(weaver_arrays(shard, ours_path), expected)  # weaver reads ours too


def test_selections_new_variables_and_custom_labels(
    shard: list[Path], raw: dict[str, Any], tmp_path: Path
) -> None:
    raw["selection"] = "jet_pt > 560"
    raw["test_time_selection"] = "(jet_pt > 580) & (ak.num(part_px) > 20)"
    raw["new_variables"]["part_ptrel_clipped"] = "_clip(part_pt / jet_pt, 0, 0.2)"
    raw["new_variables"]["part_first"] = "_pad(part_deta, 3)[:, 0]"
    raw["inputs"]["pf_features"]["vars"].append(["part_ptrel_clipped", 0.05, 10, -2, 2, -1])
    raw["inputs"]["pf_features"]["pad_mode"] = "constant"
    raw["inputs"]["pf_points"]["pad_mode"] = "constant"
    raw["inputs"]["pf_vectors"]["length"] = 16
    raw["inputs"]["jet"] = {"length": None, "vars": [["jet_mass", 100, 0.01], "part_first"]}
    raw["labels"] = {"type": "custom", "value": {"truth": "label", "other": "jet_eta > 0"}}
    raw["observers"] = ["jet_pt", "jet_mass", "jet_nparticles"]
    path = _write(tmp_path, "variant.yaml", raw)
    ours = load_arrays(shard, path)
    assert ours["_jet"].shape[1] == 2 and 0 < len(ours["truth"]) < 200
    assert_same_arrays(ours, weaver_arrays(shard, path))


@pytest.mark.parametrize(("method", "base_weight"), [("flat", None), ("ref", "jet_mass / 100")])
def test_reweighting(
    method: str, base_weight: str | None, files: list[Path], raw: dict[str, Any], tmp_path: Path
) -> None:
    raw["weights"] = {
        "use_precomputed_weights": False,
        "reweight_method": method,
        "reweight_vars": {"jet_pt": [550, 575, 600, 625, 650], "jet_eta": [-2, -1, 0, 1, 2]},
        "reweight_classes": ["jet_isTop", "jet_isQCD"],
        "class_weights": [1, 2],
        "reweight_threshold": 15,
        "reweight_basewgt": base_weight,
    }
    path = _write(tmp_path, "weighted.yaml", raw)
    completed_path = tmp_path / "weighted.auto.yaml"
    ours = prepare_config(files, path, output=completed_path).weights
    maker = weaver_preprocess.WeightMaker(
        [str(f) for f in files], weaver_config.DataConfig.load(str(path))
    )
    weavers = maker.make_weights(maker.read_file(maker._filelist))
    for name, hist in zip(ours.classes, ours.hists, strict=True):
        np.testing.assert_array_equal(np.array(hist), weavers[name], err_msg=name)

    config = weaver_config.DataConfig.load(str(completed_path))  # weaver reads our histograms
    table = weaver_fileio._read_files([str(f) for f in files], config.train_load_branches)
    table = weaver_preprocess._apply_selection(table, config.selection, funcs=config.var_funcs)
    table = weaver_preprocess._build_new_variables(table, config.train_var_funcs)
    weights_N = weaver_preprocess._build_weights(table, config)
    np.testing.assert_array_equal(
        load_arrays(files, completed_path, training=True)["_weight_"], weights_N
    )


def test_expression_helpers_match_weavers() -> None:
    tools = pytest.importorskip("weaver.utils.data.tools")
    jagged = ak.Array([[1.5, -2.0, 3.0], [], [4.0]])
    other = ak.Array([[0.5, 0.25, 1.0], [], [2.0]])
    flat = np.array([1.0, 2.0, 3.0])
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("_concat", ([jagged, other],), {}),
        ("_concat", ([flat, flat],), {}),
        ("_stack", ([jagged, other],), {"axis": 2}),
        ("_stack", ([flat, flat],), {}),
        ("_pad", (jagged, 2), {}),
        ("_pad", (jagged, 5), {"value": -1}),
        ("_pad", (ak.Array([1.0, 2.0, 3.0]), 2), {}),
        ("_repeat_pad", (jagged, 5), {}),
        ("_clip", (jagged, -1, 2), {}),
        ("_clip", (flat, 1.5, 2.5), {}),
        ("_hash", ([1, 2, 3], [4, 5, 6]), {}),
        ("_batch_argsort", (jagged,), {}),
        ("_batch_gather", (jagged, ak.argsort(other)), {}),
    ]
    for name, args, kwargs in calls:
        ours, weavers = HELPERS[name](*args, **kwargs), getattr(tools, name)(*args, **kwargs)
        assert ak.to_list(ours) == ak.to_list(weavers), name
    for name, args in [
        ("_p4_from_ptetaphim", (jagged + 5, other, other, other)),
        ("_p4_from_pxpypze", (jagged, other, other, jagged * 0 + 10)),
        ("_p4_from_ptetaphie", (jagged + 5, other, other, jagged * 0 + 10)),
    ]:
        ours, weavers = HELPERS[name](*args), getattr(tools, name)(*args)
        assert ak.to_list(ours.mass) == ak.to_list(weavers.mass), name
        assert ak.to_list(ours.pt) == ak.to_list(weavers.pt), name
