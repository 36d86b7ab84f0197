"""Turn flat lists of constituents into a table in the shared jet schema.

Every generator (toy, Pythia8) ends here, so sorting, the constituent cap, the jet four-vector
sum and the relative coordinates are computed one way, the jet columns always agree with the
stored constituents, and shards are written the same safe way.

Array legend (suffixes give the shape):
    N  jets
    M  constituents of all jets, flattened (ragged; ``jet_M`` says whose; any order)
"""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainyard.datasets import schema
from trainyard.datasets.kinematics import wrap_phi


def build_jet_table(
    jet_M: np.ndarray,
    pt_M: np.ndarray,
    eta_M: np.ndarray,
    phi_M: np.ndarray,
    labels_N: np.ndarray,
    *,
    target_pt_N: np.ndarray | None = None,
    mass_M: np.ndarray | None = None,
) -> pa.Table:
    """Sort each jet's constituents by pT, keep the hardest MAX_CONSTITUENTS, sum the jet.

    Constituents are massless unless ``mass_M`` gives their masses (a generator's hadrons), so
    the stored four-vectors are the generator's own. With ``target_pt_N`` every constituent of
    a jet (mass included) is scaled by one factor so the jet pT lands on the target: the jet
    direction is unchanged and the jet mass scales with it. Every jet must keep at least one
    constituent.
    """
    if mass_M is None:
        mass_M = np.zeros_like(pt_M)
    num_jets = len(labels_N)
    order_M = np.lexsort((-pt_M, jet_M))
    jet_M, pt_M, eta_M, phi_M = jet_M[order_M], pt_M[order_M], eta_M[order_M], phi_M[order_M]
    mass_M = mass_M[order_M]
    count_N = np.bincount(jet_M, minlength=num_jets)
    start_N = np.concatenate([[0], np.cumsum(count_N)[:-1]])
    is_kept_M = np.arange(jet_M.size) - start_N[jet_M] < schema.MAX_CONSTITUENTS
    jet_M, pt_M, eta_M, phi_M, mass_M = (
        jet_M[is_kept_M],
        pt_M[is_kept_M],
        eta_M[is_kept_M],
        phi_M[is_kept_M],
        mass_M[is_kept_M],
    )
    kept_count_N = np.bincount(jet_M, minlength=num_jets)
    if (kept_count_N == 0).any():
        empty_jets = np.flatnonzero(kept_count_N == 0)[:5].tolist()
        raise ValueError(f"jets {empty_jets} have no constituents; a generator must fill them")

    px_M, py_M = pt_M * np.cos(phi_M), pt_M * np.sin(phi_M)
    if target_pt_N is not None:
        unscaled_pt_N = np.hypot(
            _sum_per_jet(jet_M, px_M, num_jets), _sum_per_jet(jet_M, py_M, num_jets)
        )
        scale_M = (target_pt_N / unscaled_pt_N)[jet_M]
        pt_M, px_M, py_M = pt_M * scale_M, px_M * scale_M, py_M * scale_M
        mass_M = mass_M * scale_M
    pz_M = pt_M * np.sinh(eta_M)
    energy_M = np.hypot(pt_M * np.cosh(eta_M), mass_M)

    jet_px_N = _sum_per_jet(jet_M, px_M, num_jets)
    jet_py_N = _sum_per_jet(jet_M, py_M, num_jets)
    jet_pz_N = _sum_per_jet(jet_M, pz_M, num_jets)
    jet_energy_N = _sum_per_jet(jet_M, energy_M, num_jets)
    jet_pt_N = np.hypot(jet_px_N, jet_py_N)
    jet_eta_N = np.arcsinh(jet_pz_N / jet_pt_N)
    jet_phi_N = np.arctan2(jet_py_N, jet_px_N)
    jet_mass_N = np.sqrt(np.maximum(jet_energy_N**2 - jet_pt_N**2 - jet_pz_N**2, 0.0))
    deta_M = eta_M - jet_eta_N[jet_M]
    dphi_M = wrap_phi(phi_M - jet_phi_N[jet_M])

    offsets = pa.array(np.concatenate([[0], np.cumsum(kept_count_N)]).astype(np.int32))
    particle_values = (px_M, py_M, pz_M, energy_M, deta_M, dphi_M)
    columns = {
        name: pa.ListArray.from_arrays(
            offsets, pa.array(values.astype(np.float32)), type=schema.PARTICLE_LIST_TYPE
        )
        for name, values in zip(schema.PARTICLE_COLUMNS, particle_values, strict=True)
    }
    columns[schema.LABEL] = pa.array(np.asarray(labels_N, dtype=np.int64))
    jet_values = (jet_pt_N, jet_eta_N, jet_phi_N, jet_energy_N, jet_mass_N)
    for name, values in zip(schema.JET_FLOAT_COLUMNS, jet_values, strict=True):
        columns[name] = pa.array(values.astype(np.float32))
    columns[schema.JET_NPARTICLES] = pa.array(kept_count_N.astype(np.int32))
    table_schema = schema.jet_schema()
    return pa.Table.from_arrays(
        [columns[name] for name in table_schema.names], schema=table_schema
    )


def _sum_per_jet(jet_M: np.ndarray, values_M: np.ndarray, num_jets: int) -> np.ndarray:
    """Sum a per-constituent quantity over each jet's constituents."""
    return np.bincount(jet_M, weights=values_M, minlength=num_jets)


def write_table_atomically(table: pa.Table, path: Path) -> None:
    """Write to a hidden sibling temp file and rename, so ``path`` only ever holds a whole file."""
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, temp_path)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
