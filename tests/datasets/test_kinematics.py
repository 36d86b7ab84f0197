"""Four-vector helpers and the shared table builder used by every generator."""

import numpy as np
import pytest

from trainyard.datasets import kinematics, schema
from trainyard.datasets.jet_table import build_jet_table


def _mass(p4_N4: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p4_N4[:, 0] ** 2 - (p4_N4[:, 1:] ** 2).sum(axis=1), 0.0))


def test_boosted_two_body_decay_keeps_parent_mass_and_momentum() -> None:
    rng = np.random.default_rng(0)
    parent_mass_N = np.full(1000, 173.0)
    daughter1_N4, daughter2_N4 = kinematics.two_body_decay(
        rng, parent_mass_N, np.full(1000, 4.8), np.full(1000, 80.4)
    )
    parent_N4 = kinematics.massive_p4(
        np.full(1000, 600.0), rng.uniform(-2, 2, 1000), rng.uniform(-3, 3, 1000), parent_mass_N
    )
    beta_N3 = parent_N4[:, 1:] / parent_N4[:, :1]
    total_N4 = kinematics.boost(daughter1_N4, beta_N3) + kinematics.boost(daughter2_N4, beta_N3)
    np.testing.assert_allclose(total_N4, parent_N4, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(_mass(kinematics.boost(daughter2_N4, beta_N3)), 80.4, rtol=1e-6)


def test_wrap_phi_lands_in_half_open_interval() -> None:
    wrapped = kinematics.wrap_phi(np.array([np.pi, -np.pi, 3 * np.pi + 0.1, -0.2]))
    np.testing.assert_allclose(wrapped, [-np.pi, -np.pi, -np.pi + 0.1, -0.2])


def test_build_jet_table_keeps_the_hardest_constituents() -> None:
    rng = np.random.default_rng(1)
    num_particles = schema.MAX_CONSTITUENTS + 50
    jet_M = np.concatenate([np.zeros(num_particles, dtype=np.int64), [1, 1]])
    pt_M = np.concatenate([rng.uniform(1.0, 10.0, num_particles), [300.0, 200.0]])
    eta_M = rng.normal(0.5, 0.1, jet_M.size)
    phi_M = rng.normal(3.1, 0.1, jet_M.size)
    table = build_jet_table(
        jet_M, pt_M, eta_M, phi_M, np.array([0, 1]), target_pt_N=np.array([600.0, 580.0])
    )
    assert table.column(schema.JET_NPARTICLES).to_pylist() == [schema.MAX_CONSTITUENTS, 2]
    px = table.column(schema.PART_PX).to_pylist()[0]
    py = table.column(schema.PART_PY).to_pylist()[0]
    stored_pt = np.hypot(px, py)
    scale = stored_pt[0] / pt_M[:num_particles].max()
    expected = np.sort(pt_M[:num_particles])[::-1][: schema.MAX_CONSTITUENTS] * scale
    np.testing.assert_allclose(stored_pt, expected, rtol=1e-5)
    np.testing.assert_allclose(table.column(schema.JET_PT).to_numpy(), [600.0, 580.0], rtol=1e-6)
    dphi = np.concatenate(table.column(schema.PART_DPHI).to_pylist())
    assert np.abs(dphi).max() < 1.0


def test_build_jet_table_refuses_an_empty_jet() -> None:
    with pytest.raises(ValueError, match=r"jets \[1\] have no constituents"):
        build_jet_table(
            np.array([0]), np.array([5.0]), np.array([0.0]), np.array([0.0]), np.array([0, 1])
        )
