"""JetLoader: reproducible epochs, exact mid-epoch resume, disjoint ranks."""

import numpy as np
import pytest
import torch

from trainyard.data.features import JetArrays
from trainyard.data.loader import JetBatch, JetLoader
from trainyard.errors import CheckpointError, ConfigError, DataError


def _indexed_arrays(num_jets: int, max_particles: int = 4) -> JetArrays:
    """Arrays whose labels are the jet indices, so every batch says which jets it holds."""
    ramp_N11 = np.arange(num_jets, dtype=np.float32)[:, None, None]
    return JetArrays(
        points_NCP=np.broadcast_to(ramp_N11, (num_jets, 2, max_particles)).copy(),
        features_NCP=np.broadcast_to(ramp_N11, (num_jets, 7, max_particles)).copy(),
        mask_N1P=np.ones((num_jets, 1, max_particles), dtype=np.float32),
        labels_N=np.arange(num_jets, dtype=np.int64),
    )


def _epoch_indices(loader: JetLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch.labels]


def test_batches_are_tensors_of_the_right_rows() -> None:
    loader = JetLoader(_indexed_arrays(50), batch_size=8, shuffle=True, seed=3)
    batch = next(iter(loader))
    assert isinstance(batch, JetBatch)
    assert len(batch) == 8
    assert batch.points.shape == (8, 2, 4)
    assert batch.features.shape == (8, 7, 4)
    assert batch.mask.shape == (8, 1, 4)
    assert batch.labels.dtype == torch.int64
    assert batch.features.dtype == torch.float32
    torch.testing.assert_close(batch.features[:, 3, 0], batch.labels.float())
    moved = batch.to("cpu", non_blocking=True)
    assert moved.points.device.type == "cpu"


def test_epoch_length_order_and_advance() -> None:
    loader = JetLoader(_indexed_arrays(50), batch_size=8, shuffle=True, seed=3)
    assert len(loader) == 6
    first = _epoch_indices(loader)
    assert loader.epoch == 1
    assert loader.state_dict() == {"epoch": 1, "batch_index": 0}
    second = _epoch_indices(loader)
    assert len(first) == len(second) == 48
    assert len(set(first)) == 48
    assert first != second
    fresh = JetLoader(_indexed_arrays(50), batch_size=8, shuffle=True, seed=3)
    assert _epoch_indices(fresh) == first
    other_seed = JetLoader(_indexed_arrays(50), batch_size=8, shuffle=True, seed=4)
    assert _epoch_indices(other_seed) != first


def test_without_shuffle_and_drop_last_keeps_everything_in_order() -> None:
    loader = JetLoader(_indexed_arrays(10), batch_size=4, shuffle=False, seed=0, drop_last=False)
    assert len(loader) == 3
    assert [len(batch) for batch in loader] == [4, 4, 2]
    assert _epoch_indices(loader) == list(range(10))


def test_resume_mid_epoch_matches_uninterrupted_run() -> None:
    arrays = _indexed_arrays(60)
    uninterrupted = JetLoader(arrays, batch_size=7, shuffle=True, seed=9)
    expected = [batch.labels.tolist() for _ in range(3) for batch in uninterrupted]

    interrupted = JetLoader(arrays, batch_size=7, shuffle=True, seed=9)
    seen = [batch.labels.tolist() for batch in interrupted]
    iterator = iter(interrupted)
    seen += [next(iterator).labels.tolist() for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batch_index": 3}

    restored = JetLoader(arrays, batch_size=7, shuffle=True, seed=9)
    restored.load_state_dict(state)
    assert restored.epoch == 1
    seen += [batch.labels.tolist() for _ in range(2) for batch in restored]
    assert seen == expected


def test_state_after_last_batch_points_at_next_epoch() -> None:
    loader = JetLoader(_indexed_arrays(20), batch_size=5, shuffle=True, seed=1)
    iterator = iter(loader)
    for _ in range(len(loader)):
        next(iterator)
    assert loader.state_dict() == {"epoch": 1, "batch_index": 0}


def test_two_ranks_cover_every_jet_once_per_epoch() -> None:
    arrays = _indexed_arrays(64)
    ranks = [
        JetLoader(arrays, batch_size=8, shuffle=True, seed=5, rank=rank, world_size=2)
        for rank in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 4
    for _ in range(3):
        rank0, rank1 = (_epoch_indices(loader) for loader in ranks)
        assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == list(range(64))
    assert ranks[0].epoch == ranks[1].epoch == 3


def test_uneven_ranks_get_equal_batch_counts_and_stay_disjoint() -> None:
    arrays = _indexed_arrays(67)
    ranks = [
        JetLoader(arrays, batch_size=5, shuffle=True, seed=2, rank=rank, world_size=3)
        for rank in range(3)
    ]
    assert {len(loader) for loader in ranks} == {4}
    seen = [set(_epoch_indices(loader)) for loader in ranks]
    assert all(len(indices) == 20 for indices in seen)
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_invalid_settings_are_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        JetLoader(_indexed_arrays(10), batch_size=0, shuffle=True, seed=-1, rank=2, world_size=2)
    message = str(caught.value)
    assert "batch_size must be at least 1, got 0" in message
    assert "seed must be a non-negative integer, got -1" in message
    assert "rank must lie in [0, 2), got 2" in message


def test_too_few_jets_for_one_batch() -> None:
    with pytest.raises(DataError, match="not enough for one batch of 16"):
        JetLoader(_indexed_arrays(20), batch_size=16, shuffle=True, seed=0, world_size=2)


def test_foreign_state_is_rejected() -> None:
    loader = JetLoader(_indexed_arrays(20), batch_size=5, shuffle=True, seed=0)
    with pytest.raises(CheckpointError, match="epoch has 4 batches"):
        loader.load_state_dict({"epoch": 0, "batch_index": 4})
    with pytest.raises(CheckpointError, match="not of the form"):
        loader.load_state_dict({"epoch": "zero", "batch_index": 0})
    assert loader.state_dict() == {"epoch": 0, "batch_index": 0}
