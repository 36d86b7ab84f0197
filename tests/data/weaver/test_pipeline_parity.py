"""Parity with weaver-core: the same files and config give exactly the arrays weaver makes.

weaver runs in test mode (no shuffling, no sampling) through the functions its SimpleIterDataset
calls (``_read_files``, then ``_preprocess``), so events keep file order and every array compares
one to one. All comparisons are exact (bit for bit), which is stronger than allclose. weaver-core
is a test dependency: it is imported directly, so these tests fail, never skip, without it.
"""

import shutil
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import yaml
from weaver.utils import dataset as weaver_dataset
from weaver.utils.data import config as weaver_config
from weaver.utils.data import fileio as weaver_fileio
from weaver.utils.data import preprocess as weaver_preprocess
from weaver.utils.data import tools as weaver_tools

from tests.data import config_files
from tests.data.test_readers import write_root
from trainyard.data.weaver.expressions import HELPERS
from trainyard.data.weaver.pipeline import load_arrays, prepare_config

TEST_MODE = {"training": False, "shuffle": False, "reweight": False, "mode": None}


@pytest.fixture(scope="module")
def files(toy_dir: Path) -> list[Path]:
    """All three shards (500 jets)."""
    return sorted(toy_dir.glob("toy-s21-*.parquet"))


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(config_files.WRAP.read_text())


@pytest.fixture
def auto_raw() -> dict[str, Any]:
    return yaml.safe_load(config_files.AUTO_WEIGHTED.read_text())


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


def test_wrap_config_on_parquet(files: list[Path]) -> None:
    ours = load_arrays(files, config_files.WRAP)
    assert sorted(ours) == [
        "_jet",
        "_label_",
        "_pf_features",
        "_pf_mask",
        "_pf_momenta",
        "_pf_points",
        "jet_eta",
        "jet_nparticles",
        "jet_pt",
    ]
    assert_same_arrays(ours, weaver_arrays(files, config_files.WRAP))


def test_example_config_on_parquet(files: list[Path]) -> None:
    example = config_files.EXAMPLE
    assert_same_arrays(load_arrays(files, example), weaver_arrays(files, example))


def test_wrap_config_on_root(files: list[Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    roots = [write_root(tmp_path / f"{f.stem}.root", pq.read_table(f)) for f in files]
    wrap = config_files.WRAP
    assert_same_arrays(load_arrays(roots, wrap), weaver_arrays(roots, wrap, "Events"))


def test_auto_method_keeps_the_centers_a_config_gives(
    files: list[Path], raw: dict[str, Any], tmp_path: Path
) -> None:
    """The wrap config gives every center, so auto preprocessing changes nothing (the manual
    arrays are weaver's, see above, and test_parser checks weaver's reading of auto entries)."""
    raw["preprocess"]["method"] = "auto"
    path = _write(tmp_path, "wrap_auto.yaml", raw)
    ours = load_arrays(files, path, training=True)
    assert not list(tmp_path.glob("*.auto.yaml"))
    assert_same_arrays(ours, load_arrays(files, config_files.WRAP))


def test_auto_standardisation(files: list[Path], tmp_path: Path) -> None:
    path = Path(shutil.copy(config_files.AUTO_WEIGHTED, tmp_path / "jets-auto.yaml"))
    ours_path, weavers_path = tmp_path / "ours.auto.yaml", tmp_path / "weavers.auto.yaml"
    ours = prepare_config(files, path, output=ours_path)
    standardizer = weaver_preprocess.AutoStandardizer(
        [str(f) for f in files], weaver_config.DataConfig.load(str(path))
    )
    weavers = standardizer.produce(str(weavers_path)).preprocess_params
    computed, given = (
        ["log_pt", "log_energy", "log_energy_fraction"],
        ["log_pt_fraction", "delta_r"],
    )
    for name, variable in ours.variables.items():
        assert (variable.center, variable.scale) == (
            weavers[name]["center"],
            weavers[name]["scale"],
        ), name
        assert (variable.center is not None) == (name in computed + given), name
    assert (ours.variables["delta_r"].center, ours.variables["delta_r"].scale) == (0.2, 4.0)

    expected = weaver_arrays(files, weavers_path)
    assert_same_arrays(load_arrays(files, ours_path), expected)
    assert_same_arrays(weaver_arrays(files, ours_path), expected)  # weaver reads ours too


def test_selections_new_variables_and_custom_labels(
    files: list[Path], raw: dict[str, Any], tmp_path: Path
) -> None:
    raw["selection"] = "jet_pt > 560"
    raw["test_time_selection"] = "(jet_pt > 580) & (ak.num(part_px) > 20)"
    raw["new_variables"]["pt_fraction_clipped"] = "_clip(constituent_pt / jet_pt, 0, 0.2)"
    raw["new_variables"]["first_deta"] = "_pad(part_deta, 3)[:, 0]"
    raw["inputs"]["pf_features"]["vars"].append(["pt_fraction_clipped", 0.05, 10, -2, 2, -1])
    raw["inputs"]["pf_features"]["pad_mode"] = "constant"
    raw["inputs"]["pf_points"]["pad_mode"] = "constant"
    raw["inputs"]["pf_momenta"]["length"] = 16
    raw["inputs"]["jet"]["vars"].append("first_deta")
    raw["labels"] = {"type": "custom", "value": {"truth": "label", "other": "jet_eta > 0"}}
    raw["observers"] = ["jet_pt", "jet_mass", "jet_nparticles"]
    path = _write(tmp_path, "variant.yaml", raw)
    ours = load_arrays(files, path)
    assert ours["_jet"].shape[1] == 3 and 0 < len(ours["truth"]) < 500
    assert_same_arrays(ours, weaver_arrays(files, path))


@pytest.mark.parametrize(("method", "base_weight"), [("flat", None), ("ref", "jet_mass / 100")])
def test_reweighting(
    method: str,
    base_weight: str | None,
    files: list[Path],
    auto_raw: dict[str, Any],
    tmp_path: Path,
) -> None:
    auto_raw["weights"].update(
        reweight_method=method, class_weights=[1, 2], reweight_basewgt=base_weight
    )
    path = _write(tmp_path, "weighted.yaml", auto_raw)
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
        ours, weavers = (
            HELPERS[name](*args, **kwargs),
            getattr(weaver_tools, name)(*args, **kwargs),
        )
        assert ak.to_list(ours) == ak.to_list(weavers), name
    for name, args in [
        ("_p4_from_ptetaphim", (jagged + 5, other, other, other)),
        ("_p4_from_pxpypze", (jagged, other, other, jagged * 0 + 10)),
        ("_p4_from_ptetaphie", (jagged + 5, other, other, jagged * 0 + 10)),
    ]:
        ours, weavers = HELPERS[name](*args), getattr(weaver_tools, name)(*args)
        assert ak.to_list(ours.mass) == ak.to_list(weavers.mass), name
        assert ak.to_list(ours.pt) == ak.to_list(weavers.pt), name
