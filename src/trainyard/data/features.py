"""ParticleNet inputs from a jet table, matching weaver's TopLandscape ``top_kin.yaml`` config.

The feature set, standardisation and clipping follow that config so a model trained here sees
the same inputs as one trained with weaver on the same files. Unlike weaver (``pad_mode: wrap``)
jets are padded with zeros, and the mask marks the real particles.

Array legend (suffixes give the shape):
    N  jets
    C  channels (2 point coordinates, 7 features, 4 vector components or 1 mask)
    P  particle slots per jet (``max_particles``)
    M  particles of all jets, flattened in jet order (ragged)
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from trainyard.data.batch import InputRole
from trainyard.data.reader import read_jet_table, resolve_files
from trainyard.data.weaver.types import (
    InputGroup,
    InputVariable,
    NewVariable,
    SimpleLabels,
    WeaverDataConfig,
)
from trainyard.datasets import schema
from trainyard.errors import ConfigError, DataError

POINT_NAMES: tuple[str, ...] = ("part_deta", "part_dphi")
FEATURE_NAMES: tuple[str, ...] = (
    "part_pt_log",
    "part_e_log",
    "part_logptrel",
    "part_logerel",
    "part_deltaR",
    "part_deta",
    "part_dphi",
)
_STANDARDISATION: dict[str, tuple[float, float]] = {
    "part_pt_log": (1.7, 0.7),
    "part_e_log": (2.0, 0.7),
    "part_logptrel": (-4.7, 0.7),
    "part_logerel": (-4.7, 0.7),
    "part_deltaR": (0.2, 4.0),
    "part_deta": (0.0, 1.0),
    "part_dphi": (0.0, 1.0),
}
"""(subtract, multiply) per feature, as in top_kin.yaml; deta and dphi are left as they are."""
FEATURE_CLIP = 5.0

REQUIRED_COLUMNS: tuple[str, ...] = (
    schema.PART_PX,
    schema.PART_PY,
    schema.PART_ENERGY,
    schema.PART_DETA,
    schema.PART_DPHI,
    schema.JET_PT,
    schema.JET_ENERGY,
    schema.LABEL,
)
VECTOR_NAMES: tuple[str, ...] = (
    schema.PART_PX,
    schema.PART_PY,
    schema.PART_PZ,
    schema.PART_ENERGY,
)
"""The Lorentz vector of each particle, for models with pair features (Particle Transformer)."""
DEFAULT_MAX_PARTICLES = 128
BUILTIN_GROUPS: Mapping[InputRole, str] = {
    InputRole.POINTS: "pf_points",
    InputRole.FEATURES: "pf_features",
    InputRole.VECTORS: "pf_vectors",
    InputRole.MASK: "pf_mask",
}
"""The built-in inputs named as TopLandscape's top_kin.yaml names its input groups, in its
order."""
_NEW_VARIABLES = {
    "part_mask": "ak.ones_like(part_energy)",
    "part_pt": "np.hypot(part_px, part_py)",
    "part_pt_log": "np.log(part_pt)",
    "part_e_log": "np.log(part_energy)",
    "part_logptrel": "np.log(part_pt / jet_pt)",
    "part_logerel": "np.log(part_energy / jet_energy)",
    "part_deltaR": "np.hypot(part_deta, part_dphi)",
    "is_qcd": "label == 0",
    "is_top": "label == 1",
}
"""top_kin.yaml's new_variables over the trainyard jet schema (``_raw_features``), and labels."""
_UNSTANDARDISED = frozenset(POINT_NAMES)
"""Features top_kin.yaml leaves as they are (center null: no shift, no clip)."""


def required_columns(vectors: bool) -> tuple[str, ...]:
    """The jet-table columns the built-in inputs read, with or without the vectors."""
    extra = tuple(name for name in VECTOR_NAMES if name not in REQUIRED_COLUMNS)
    return REQUIRED_COLUMNS + extra if vectors else REQUIRED_COLUMNS


@dataclass(frozen=True)
class JetArrays:
    """A whole dataset as ParticleNet inputs in memory, ready to be indexed batch by batch."""

    points_NCP: np.ndarray
    """float32 (N, 2, P): (deta, dphi), the coordinates ParticleNet builds its graph from."""
    features_NCP: np.ndarray
    """float32 (N, 7, P): FEATURE_NAMES, standardised and clipped to [-5, 5]."""
    mask_N1P: np.ndarray
    """float32 (N, 1, P): 1 for a real particle, 0 for padding."""
    labels_N: np.ndarray
    """int64 (N,): 1 = top, 0 = QCD."""
    vectors_N4P: np.ndarray | None = None
    """float32 (N, 4, P): VECTOR_NAMES in GeV, zero in padded slots; only when asked for."""

    def __post_init__(self) -> None:
        num_jets = len(self.labels_N)
        for name in ("points_NCP", "features_NCP", "mask_N1P", "vectors_N4P"):
            if getattr(self, name) is not None and len(getattr(self, name)) != num_jets:
                raise ValueError(f"{name} has {len(getattr(self, name))} jets, labels {num_jets}")

    def __len__(self) -> int:
        return len(self.labels_N)

    @property
    def max_particles(self) -> int:
        """Particle slots per jet (P)."""
        return self.mask_N1P.shape[-1]


def load_jet_arrays(
    pattern: str | Path | Sequence[str | Path],
    *,
    base_dir: Path | None = None,
    max_particles: int = DEFAULT_MAX_PARTICLES,
) -> JetArrays:
    """Resolve ``pattern``, read only the needed columns and build the ParticleNet inputs."""
    files = resolve_files(pattern, base_dir=base_dir)
    table = read_jet_table(files, REQUIRED_COLUMNS)
    return build_particlenet_inputs(table, max_particles=max_particles)


def build_particlenet_inputs(
    table: pa.Table, *, max_particles: int = DEFAULT_MAX_PARTICLES, vectors: bool = False
) -> JetArrays:
    """Compute the top_kin.yaml features per particle and pad/truncate jets to ``max_particles``.

    Particles are kept in stored order (hardest first), so truncation drops the softest.
    With ``vectors`` the particles' (px, py, pz, energy) are padded alike (``vectors_N4P``);
    the table then needs ``part_pz`` too.
    """
    if max_particles < 1:
        raise ConfigError(
            [f"max_particles must be at least 1, got {max_particles}; 128 matches top_kin.yaml"],
            source="ParticleNet input settings",
        )
    missing = [name for name in required_columns(vectors) if name not in table.column_names]
    if missing:
        raise DataError(
            f"the jet table lacks column(s) {missing} needed for the built-in inputs; "
            f"available columns: {table.column_names}. Use files in the trainyard jet schema"
        )
    num_jets = table.num_rows
    counts_N, px_M = _flatten(table, schema.PART_PX)
    particle_M = {schema.PART_PX: px_M}
    per_particle = [schema.PART_PY, schema.PART_ENERGY, schema.PART_DETA, schema.PART_DPHI]
    for name in per_particle + ([schema.PART_PZ] if vectors else []):
        name_counts_N, particle_M[name] = _flatten(table, name)
        if not np.array_equal(name_counts_N, counts_N):
            jet = int(np.flatnonzero(name_counts_N != counts_N)[0])
            raise DataError(
                f"column {name} has {name_counts_N[jet]} particles in jet {jet} but "
                f"{schema.PART_PX} has {counts_N[jet]}; the file is inconsistent, regenerate it"
            )

    jet_M = np.repeat(np.arange(num_jets), counts_N)
    start_N = np.cumsum(counts_N) - counts_N
    slot_M = np.arange(jet_M.size) - start_N[jet_M]
    is_kept_M = slot_M < max_particles
    jet_M, slot_M = jet_M[is_kept_M], slot_M[is_kept_M]
    kept_M = {name: values_M[is_kept_M] for name, values_M in particle_M.items()}

    jet_pt_N = _column_numpy(table, schema.JET_PT)
    jet_energy_N = _column_numpy(table, schema.JET_ENERGY)
    raw_features_M = _raw_features(kept_M, jet_pt_N[jet_M], jet_energy_N[jet_M])

    def place(channels_CM: list[np.ndarray]) -> np.ndarray:
        return _scatter(channels_CM, jet_M, slot_M, num_jets, max_particles)

    points_NCP = place([raw_features_M[name] for name in POINT_NAMES])
    features_NCP = place([_standardise(name, raw_features_M[name]) for name in FEATURE_NAMES])
    mask_N1P = place([np.ones(jet_M.size, dtype=np.float32)])
    labels_N = _column_numpy(table, schema.LABEL).astype(np.int64)
    vectors_N4P = place([kept_M[name] for name in VECTOR_NAMES]) if vectors else None
    return JetArrays(points_NCP, features_NCP, mask_N1P, labels_N, vectors_N4P)


def builtin_weaver_config(
    max_particles: int = DEFAULT_MAX_PARTICLES, *, vectors: bool = False
) -> WeaverDataConfig:
    """The weaver data config that builds the built-in inputs from files in the trainyard jet
    schema, for tools that speak weaver's format (the preprocessing JSON that CMSSW reads next
    to an exported model).

    It is TopLandscape's top_kin.yaml, without pf_vectors unless ``vectors`` (for models that
    take Lorentz vectors, as ParT does), zero-padded to ``max_particles``,
    its new_variables computed from our columns, and labels [is_qcd, is_top] in the built-in
    class order (0 = QCD, 1 = top). part_deta and part_dphi are unstandardised in pf_features
    as in top_kin.yaml, while ``_standardise`` clips them at +-FEATURE_CLIP: the two agree for
    every particle of a jet, whose distance from the jet axis is far below 5.
    """

    def group(name: str, variables: list[InputVariable]) -> InputGroup:
        return InputGroup(name, max_particles, "constant", tuple(variables))

    def feature(name: str) -> InputVariable:
        if name in _UNSTANDARDISED:
            return InputVariable(name, None)
        subtract, multiply = _STANDARDISATION[name]
        return InputVariable(name, subtract, multiply, -FEATURE_CLIP, FEATURE_CLIP)

    groups = {
        InputRole.POINTS: [InputVariable(name, None) for name in POINT_NAMES],
        InputRole.FEATURES: [feature(name) for name in FEATURE_NAMES],
        InputRole.VECTORS: [InputVariable(name, None) for name in VECTOR_NAMES],
        InputRole.MASK: [InputVariable("part_mask", None)],
    }
    if not vectors:
        del groups[InputRole.VECTORS]
    return WeaverDataConfig(
        inputs=tuple(group(BUILTIN_GROUPS[role], variables) for role, variables in groups.items()),
        labels=SimpleLabels(("is_qcd", "is_top")),
        new_variables=tuple(NewVariable(name, expr) for name, expr in _NEW_VARIABLES.items()),
    )


def _scatter(
    channels_CM: list[np.ndarray],
    jet_M: np.ndarray,
    slot_M: np.ndarray,
    num_jets: int,
    max_particles: int,
) -> np.ndarray:
    """Place per-particle channels into a zero-padded (N, C, P) float32 array.

    One flat index per particle, computed once, serves every channel.
    """
    num_channels = len(channels_CM)
    padded_NCP = np.zeros((num_jets, num_channels, max_particles), dtype=np.float32)
    flat_M = jet_M * (num_channels * max_particles) + slot_M
    padded_flat = padded_NCP.reshape(-1)
    for channel, values_M in enumerate(channels_CM):
        padded_flat[flat_M + channel * max_particles] = values_M
    return padded_NCP


def _standardise(name: str, values_M: np.ndarray) -> np.ndarray:
    """(x - subtract) * multiply, clipped to [-5, 5], as weaver's manual preprocessing does."""
    subtract, multiply = _STANDARDISATION[name]
    return np.clip((values_M - subtract) * multiply, -FEATURE_CLIP, FEATURE_CLIP)


def _raw_features(
    particle_M: dict[str, np.ndarray], jet_pt_M: np.ndarray, jet_energy_M: np.ndarray
) -> dict[str, np.ndarray]:
    """The new_variables of top_kin.yaml, before standardisation; log(0) clips to -5 later."""
    pt_M = np.hypot(particle_M[schema.PART_PX], particle_M[schema.PART_PY])
    energy_M = particle_M[schema.PART_ENERGY]
    deta_M, dphi_M = particle_M[schema.PART_DETA], particle_M[schema.PART_DPHI]
    with np.errstate(divide="ignore"):
        return {
            "part_pt_log": np.log(pt_M),
            "part_e_log": np.log(energy_M),
            "part_logptrel": np.log(pt_M / jet_pt_M),
            "part_logerel": np.log(energy_M / jet_energy_M),
            "part_deltaR": np.hypot(deta_M, dphi_M),
            "part_deta": deta_M,
            "part_dphi": dphi_M,
        }


def _flatten(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Particles per jet and the flattened float32 values of one list column."""
    import pyarrow.compute as pc  # here: only staging needs it, not a worker reusing shards

    lists = table.column(name).combine_chunks()
    counts_N = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
    values_M = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float32)
    return counts_N, values_M


def _column_numpy(table: pa.Table, name: str) -> np.ndarray:
    """One scalar column as a numpy array (float columns as float32)."""
    values = table.column(name).to_numpy()
    return values.astype(np.float32) if values.dtype.kind == "f" else values
