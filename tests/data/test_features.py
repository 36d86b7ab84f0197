"""ParticleNet inputs: shapes, padding, and values against a direct recomputation."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from trainyard.data.features import (
    FEATURE_NAMES,
    VECTOR_NAMES,
    JetArrays,
    build_particlenet_inputs,
    load_jet_arrays,
)
from trainyard.data.reader import read_jet_table, resolve_files
from trainyard.datasets import schema
from trainyard.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def table(toy_dir: Path) -> pa.Table:
    return read_jet_table(resolve_files("*.parquet", base_dir=toy_dir), schema.ALL_COLUMNS)


def _expected_features(table: pa.Table, jet: int) -> np.ndarray:
    """top_kin.yaml written out by hand for one jet, in float64; shape (7, num_particles)."""
    row = {
        name: np.asarray(table.column(name)[jet].as_py(), dtype=np.float64)
        for name in table.column_names
    }
    pt = np.hypot(row[schema.PART_PX], row[schema.PART_PY])
    energy = row[schema.PART_ENERGY]
    deta, dphi = row[schema.PART_DETA], row[schema.PART_DPHI]
    features = np.stack(
        [
            (np.log(pt) - 1.7) * 0.7,
            (np.log(energy) - 2.0) * 0.7,
            (np.log(pt / row[schema.JET_PT]) + 4.7) * 0.7,
            (np.log(energy / row[schema.JET_ENERGY]) + 4.7) * 0.7,
            (np.hypot(deta, dphi) - 0.2) * 4.0,
            deta,
            dphi,
        ]
    )
    return np.clip(features, -5.0, 5.0)


def test_shapes_and_types(table: pa.Table) -> None:
    arrays = build_particlenet_inputs(table, max_particles=64)
    assert len(arrays) == table.num_rows == 500
    assert arrays.points_NCP.shape == (500, 2, 64)
    assert arrays.features_NCP.shape == (500, len(FEATURE_NAMES), 64) == (500, 7, 64)
    assert arrays.mask_N1P.shape == (500, 1, 64)
    assert arrays.max_particles == 64
    for array in (arrays.points_NCP, arrays.features_NCP, arrays.mask_N1P):
        assert array.dtype == np.float32
    assert arrays.labels_N.dtype == np.int64
    np.testing.assert_array_equal(arrays.labels_N, table.column(schema.LABEL).to_numpy())
    assert np.abs(arrays.features_NCP).max() <= 5.0


def test_values_match_direct_recomputation(table: pa.Table) -> None:
    counts = table.column(schema.JET_NPARTICLES).to_numpy()
    short_jet = int(np.argmin(counts))
    long_jet = int(np.argmax(counts))
    max_particles = int(counts[short_jet]) + 5
    arrays = build_particlenet_inputs(table, max_particles=max_particles)
    for jet in (short_jet, long_jet):
        expected = _expected_features(table, jet)[:, :max_particles]
        num_real = expected.shape[1]
        np.testing.assert_allclose(
            arrays.features_NCP[jet, :, :num_real], expected, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(arrays.points_NCP[jet, :, :num_real], expected[5:], atol=1e-7)
        assert (arrays.mask_N1P[jet, 0, :num_real] == 1.0).all()
        assert (arrays.mask_N1P[jet, 0, num_real:] == 0.0).all()
        assert (arrays.features_NCP[jet, :, num_real:] == 0.0).all()
        assert (arrays.points_NCP[jet, :, num_real:] == 0.0).all()
    np.testing.assert_array_equal(
        arrays.mask_N1P.sum(axis=(1, 2)), np.minimum(counts, max_particles)
    )


def test_works_on_a_sliced_multi_chunk_table(table: pa.Table) -> None:
    chunked = pa.concat_tables([table.slice(0, 100), table.slice(300, 50)])
    arrays = build_particlenet_inputs(chunked)
    reference = build_particlenet_inputs(table)
    np.testing.assert_array_equal(arrays.features_NCP[100:], reference.features_NCP[300:350])
    np.testing.assert_array_equal(arrays.mask_N1P[:100], reference.mask_N1P[:100])


def test_load_jet_arrays_reads_only_what_it_needs(toy_dir: Path, table: pa.Table) -> None:
    arrays = load_jet_arrays("toy-*.parquet", base_dir=toy_dir, max_particles=32)
    assert isinstance(arrays, JetArrays)
    reference = build_particlenet_inputs(table, max_particles=32)
    np.testing.assert_array_equal(arrays.features_NCP, reference.features_NCP)
    np.testing.assert_array_equal(arrays.labels_N, reference.labels_N)


def test_missing_column_lists_available(table: pa.Table) -> None:
    with pytest.raises(DataError) as caught:
        build_particlenet_inputs(table.drop_columns([schema.JET_ENERGY]))
    message = str(caught.value)
    assert "['jet_energy']" in message
    assert "available columns" in message
    assert schema.JET_MASS in message


def test_inconsistent_particle_counts_are_reported(table: pa.Table) -> None:
    index = table.schema.get_field_index(schema.PART_DETA)
    shifted = table.column(schema.PART_DETA).to_pylist()
    shifted[3] = shifted[3][:-1]
    broken = table.set_column(index, schema.PART_DETA, pa.array(shifted, pa.list_(pa.float32())))
    with pytest.raises(DataError, match=r"part_deta has \d+ particles in jet 3"):
        build_particlenet_inputs(broken)


def test_max_particles_must_be_positive(table: pa.Table) -> None:
    with pytest.raises(ConfigError, match="max_particles must be at least 1, got 0"):
        build_particlenet_inputs(table, max_particles=0)


def test_vectors_are_the_particles_four_momenta_zero_padded(table: pa.Table) -> None:
    arrays = build_particlenet_inputs(table, max_particles=16, vectors=True)
    assert arrays.vectors_N4P is not None and arrays.vectors_N4P.shape == (len(arrays), 4, 16)
    assert build_particlenet_inputs(table, max_particles=16).vectors_N4P is None
    for jet in (0, 7):
        count = min(len(table.column(schema.PART_PX)[jet]), 16)
        for channel, name in enumerate(VECTOR_NAMES):
            values = np.asarray(table.column(name)[jet].as_py()[:count], dtype=np.float32)
            np.testing.assert_array_equal(arrays.vectors_N4P[jet, channel, :count], values)
            assert not arrays.vectors_N4P[jet, channel, count:].any()
