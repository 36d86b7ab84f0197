"""Our files and features agree with weaver reading the same files with a top_kin-style config.

The config below restates the brief's feature set in weaver's format; padding is set to
``constant`` (weaver's TopLandscape config wraps) so padded slots compare too.
"""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from trainyard.data.features import load_jet_arrays
from trainyard.datasets import schema

SimpleIterDataset = pytest.importorskip("weaver.utils.dataset").SimpleIterDataset

MAX_PARTICLES = 128


def _weaver_config() -> dict:
    def block(variables: list) -> dict:
        return {"length": MAX_PARTICLES, "pad_mode": "constant", "vars": variables}

    return {
        "selection": None,
        "new_variables": {
            "part_mask": "ak.ones_like(part_energy)",
            "part_pt": "np.hypot(part_px, part_py)",
            "part_pt_log": "np.log(part_pt)",
            "part_e_log": "np.log(part_energy)",
            "part_logptrel": "np.log(part_pt/jet_pt)",
            "part_logerel": "np.log(part_energy/jet_energy)",
            "part_deltaR": "np.hypot(part_deta, part_dphi)",
            "jet_isTop": "label",
            "jet_isQCD": "1-label",
        },
        "preprocess": {"method": "manual", "data_fraction": 0.5},
        "inputs": {
            "pf_points": block([["part_deta", None], ["part_dphi", None]]),
            "pf_features": block(
                [
                    ["part_pt_log", 1.7, 0.7],
                    ["part_e_log", 2.0, 0.7],
                    ["part_logptrel", -4.7, 0.7],
                    ["part_logerel", -4.7, 0.7],
                    ["part_deltaR", 0.2, 4.0],
                    ["part_deta", None],
                    ["part_dphi", None],
                ]
            ),
            "pf_mask": block([["part_mask", None]]),
        },
        "labels": {"type": "simple", "value": ["jet_isTop", "jet_isQCD"]},
        "observers": ["jet_mass"],
    }


def test_weaver_reads_our_files_into_the_same_inputs(toy_dir: Path, tmp_path: Path) -> None:
    shard = toy_dir / "toy-s21-0002.parquet"
    config_path = tmp_path / "top_kin_constant_pad.yaml"
    # Key order matters: new_variables may use the ones defined above them.
    config_path.write_text(yaml.safe_dump(_weaver_config(), sort_keys=False))
    dataset = SimpleIterDataset(
        {"toy": [str(shard)]},
        str(config_path),
        for_training=False,
        load_range_and_fraction=((0, 1), 1, 1),
        fetch_by_files=True,
        fetch_step=1,
        name="compat",
    )
    samples = list(dataset)
    ours = load_jet_arrays(str(shard), max_particles=MAX_PARTICLES)
    assert len(samples) == len(ours)

    # weaver may reorder jets; jet masses are distinct, so they identify each jet.
    our_mass = pq.read_table(shard, columns=[schema.JET_MASS]).column(0).to_numpy()
    for inputs, labels, observers in samples:
        jet = int(np.argmin(np.abs(our_mass - observers["jet_mass"])))
        np.testing.assert_allclose(inputs["pf_features"], ours.features_NCP[jet], atol=1e-6)
        np.testing.assert_allclose(inputs["pf_points"], ours.points_NCP[jet], atol=1e-6)
        np.testing.assert_array_equal(inputs["pf_mask"], ours.mask_N1P[jet])
        # weaver's class index 0 is jet_isTop.
        assert labels["_label_"] == 1 - ours.labels_N[jet]
