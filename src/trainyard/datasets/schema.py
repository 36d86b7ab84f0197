"""The Parquet layout of jet datasets, shared by every generator trainyard ships.

It follows the converted public top-tagging ("TopLandscape") Parquet files, so weaver-core's
TopLandscape data configs (e.g. particle_transformer's ``top_kin.yaml``) read our files
unchanged and our readers read theirs. One row is one jet; per-particle columns are lists with
the constituents sorted by transverse momentum, hardest first, at most ``MAX_CONSTITUENTS``.

No column and no list element may be null, and the schema says so (``not null``): awkward then
reads a constituent column as ``var * float32`` rather than ``option[var * ?float32]``, which
weaver-core pads with its compiled kernels instead of a Python loop over jets (about 1 s per
1,000 jets per wrap-padded variable in weaver-core 0.5.3).
"""

from collections.abc import Mapping

import pyarrow as pa

MAX_CONSTITUENTS = 200
"""Constituents stored per jet; the softest beyond this are dropped, as in TopLandscape."""

LABEL_TOP = 1
LABEL_QCD = 0

PART_PX = "part_px"
PART_PY = "part_py"
PART_PZ = "part_pz"
PART_ENERGY = "part_energy"
PART_DETA = "part_deta"
"""eta of the particle minus eta of the jet."""
PART_DPHI = "part_dphi"
"""phi of the particle minus phi of the jet, wrapped to [-pi, pi)."""

JET_PT = "jet_pt"
JET_ETA = "jet_eta"
JET_PHI = "jet_phi"
JET_ENERGY = "jet_energy"
JET_MASS = "jet_mass"
JET_NPARTICLES = "jet_nparticles"

LABEL = "label"
"""1 = top (signal), 0 = QCD (background)."""

PARTICLE_COLUMNS: tuple[str, ...] = (
    PART_PX,
    PART_PY,
    PART_PZ,
    PART_ENERGY,
    PART_DETA,
    PART_DPHI,
)
JET_FLOAT_COLUMNS: tuple[str, ...] = (JET_PT, JET_ETA, JET_PHI, JET_ENERGY, JET_MASS)
ALL_COLUMNS: tuple[str, ...] = (
    *PARTICLE_COLUMNS,
    LABEL,
    *JET_FLOAT_COLUMNS,
    JET_NPARTICLES,
)

PARTICLE_LIST_TYPE = pa.list_(pa.field("item", pa.float32(), nullable=False))
"""A constituent column: a list per jet of float32 values that are never null."""

METADATA_KEY = b"trainyard"
"""Schema-metadata key under which a generator records its settings (JSON)."""


def jet_schema(metadata: Mapping[bytes, bytes] | None = None) -> pa.Schema:
    """Return the Arrow schema every jet-dataset shard is written with.

    ``metadata`` (e.g. ``{METADATA_KEY: json_bytes}``) is attached so a shard says how it was
    made without a side file.
    """
    particle_fields = [
        pa.field(name, PARTICLE_LIST_TYPE, nullable=False) for name in PARTICLE_COLUMNS
    ]
    jet_fields = [pa.field(name, pa.float32(), nullable=False) for name in JET_FLOAT_COLUMNS]
    fields = [
        *particle_fields,
        pa.field(LABEL, pa.int64(), nullable=False),
        *jet_fields,
        pa.field(JET_NPARTICLES, pa.int32(), nullable=False),
    ]
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)
