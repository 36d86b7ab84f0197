"""Vectorised relativistic kinematics for jet generators, in numpy.

Array legend (suffixes give the shape):
    N  independent objects (particles, decays)
    X  any leading shape
    4  four-vector (E, px, py, pz)
    3  three-vector (px, py, pz)
"""

import numpy as np


def breit_wigner(rng: np.random.Generator, mass: float, width: float, size: int) -> np.ndarray:
    """Cauchy-distributed masses, truncated at five widths so the tails stay physical."""
    return mass + width / 2.0 * np.clip(rng.standard_cauchy(size), -10.0, 10.0)


def massive_p4(
    pt_N: np.ndarray, eta_N: np.ndarray, phi_N: np.ndarray, mass_N: np.ndarray
) -> np.ndarray:
    """Four-momenta (E, px, py, pz) from pT, eta, phi and mass."""
    px_N, py_N, pz_N = pt_N * np.cos(phi_N), pt_N * np.sin(phi_N), pt_N * np.sinh(eta_N)
    energy_N = np.sqrt(px_N**2 + py_N**2 + pz_N**2 + mass_N**2)
    return np.stack([energy_N, px_N, py_N, pz_N], axis=-1)


def two_body_decay(
    rng: np.random.Generator, parent_mass_N: np.ndarray, mass1_N: np.ndarray, mass2_N: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay in the parent rest frame; returns both daughters' p4."""
    num = len(parent_mass_N)
    momentum_N = np.sqrt(
        (parent_mass_N**2 - (mass1_N + mass2_N) ** 2)
        * (parent_mass_N**2 - (mass1_N - mass2_N) ** 2)
    ) / (2.0 * parent_mass_N)
    cos_theta_N = rng.uniform(-1.0, 1.0, num)
    sin_theta_N = np.sqrt(1.0 - cos_theta_N**2)
    azimuth_N = rng.uniform(-np.pi, np.pi, num)
    direction_N3 = np.stack(
        [sin_theta_N * np.cos(azimuth_N), sin_theta_N * np.sin(azimuth_N), cos_theta_N], axis=-1
    )
    p3_N3 = momentum_N[:, None] * direction_N3
    energy1_N = np.sqrt(momentum_N**2 + mass1_N**2)
    energy2_N = np.sqrt(momentum_N**2 + mass2_N**2)
    return (
        np.concatenate([energy1_N[:, None], p3_N3], axis=-1),
        np.concatenate([energy2_N[:, None], -p3_N3], axis=-1),
    )


def boost(p4_N4: np.ndarray, beta_N3: np.ndarray) -> np.ndarray:
    """Lorentz-boost four-momenta by velocity ``beta`` (rest frame -> frame where it moves)."""
    beta_sq_N = np.maximum((beta_N3**2).sum(axis=-1), 1e-300)
    gamma_N = 1.0 / np.sqrt(1.0 - beta_sq_N)
    beta_dot_p_N = (beta_N3 * p4_N4[:, 1:]).sum(axis=-1)
    energy_N = gamma_N * (p4_N4[:, 0] + beta_dot_p_N)
    coefficient_N = (gamma_N - 1.0) / beta_sq_N * beta_dot_p_N + gamma_N * p4_N4[:, 0]
    p3_N3 = p4_N4[:, 1:] + coefficient_N[:, None] * beta_N3
    return np.concatenate([energy_N[:, None], p3_N3], axis=-1)


def pt_eta_phi(p4_X4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transverse momentum, pseudorapidity and azimuth of four-momenta of any leading shape."""
    px, py, pz = p4_X4[..., 1], p4_X4[..., 2], p4_X4[..., 3]
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / pt), np.arctan2(py, px)


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap azimuthal angles to [-pi, pi)."""
    return (phi + np.pi) % (2.0 * np.pi) - np.pi
