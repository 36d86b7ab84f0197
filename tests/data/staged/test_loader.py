"""StagedLoader: right rows, rank coverage, reproducible shuffles, exact resume, kvikio paths."""

import logging
import os
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from trainyard.data.batch import JetBatch
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.loader import StagedLoader, epoch_order, select_io
from trainyard.data.staged.prefetch import Prefetcher
from trainyard.data.staged.readers import MmapReader
from trainyard.data.staged.staging import stage, staging_key
from trainyard.errors import CheckpointError, ConfigError, DataError

NUM_JETS = 103
SMALL_BLOCKS = {"block_size": 8, "window_blocks": 2}


def _stage_indexed(root: Path, num_jets: int = NUM_JETS) -> StagedDataset:
    """Jets whose every value is their index, in shards of 37 (not a multiple of a block)."""
    ramp_N11 = np.arange(num_jets, dtype=np.float32)[:, None, None]
    arrays = {
        "points": np.broadcast_to(ramp_N11, (num_jets, 2, 4)),
        "features": np.broadcast_to(ramp_N11, (num_jets, 7, 4)),
        "mask": np.ones((num_jets, 1, 4), dtype=np.float32),
        "labels": np.arange(num_jets, dtype=np.int64),
    }
    chunks = (
        {name: array[start : start + 25] for name, array in arrays.items()}
        for start in range(0, num_jets, 25)
    )
    key = staging_key([], f"indexed-{num_jets}")
    return stage(chunks, root, key=key, jets_per_shard=37)


@pytest.fixture
def dataset(tmp_path: Path) -> StagedDataset:
    return _stage_indexed(tmp_path)


def _loader(dataset: StagedDataset, **settings: object) -> StagedLoader:
    options: dict[str, object] = {"batch_size": 8, "shuffle": True, "seed": 3, **SMALL_BLOCKS}
    options.update(settings)
    return StagedLoader(dataset, **options)  # type: ignore[arg-type]


def _epoch(loader: StagedLoader) -> list[list[int]]:
    """The jet indices of each batch of one epoch, checking every field holds the same jets."""
    batches = []
    for batch in loader:
        jets = batch.labels.tolist()
        assert batch.inputs["features"][:, 6, 3].tolist() == [float(jet) for jet in jets]
        assert batch.inputs["points"][:, 1, 0].tolist() == [float(jet) for jet in jets]
        batches.append(jets)
    return batches


def test_batches_are_jet_batches_of_the_right_rows(dataset: StagedDataset) -> None:
    loader = _loader(dataset, shuffle=False, full_batches=False, prefetch=0)
    batches = _epoch(loader)
    assert [jet for batch in batches for jet in batch] == list(range(NUM_JETS))
    batch = next(iter(loader))
    assert isinstance(batch, JetBatch)
    assert batch.inputs["points"].shape == (8, 2, 4)
    assert batch.inputs["features"].shape == (8, 7, 4)
    assert batch.inputs["mask"].shape == (8, 1, 4)
    assert batch.inputs["features"].dtype == torch.float32
    assert batch.labels.dtype == torch.int64


@pytest.mark.parametrize("world_size", [2, 3])
def test_validation_ranks_see_every_jet_exactly_once(
    dataset: StagedDataset, world_size: int
) -> None:
    loaders = [
        _loader(dataset, full_batches=False, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    seen = [jet for loader in loaders for batch in _epoch(loader) for jet in batch]
    assert sorted(seen) == list(range(NUM_JETS))
    assert max(map(len, loaders)) - min(map(len, loaders)) <= 1


@pytest.mark.parametrize("world_size", [2, 3])
def test_training_ranks_get_equal_full_batches_covering_every_jet(
    dataset: StagedDataset, world_size: int
) -> None:
    loaders = [_loader(dataset, rank=rank, world_size=world_size) for rank in range(world_size)]
    epochs = [_epoch(loader) for loader in loaders]
    assert len({len(loader) for loader in loaders}) == 1
    assert all(len(batch) == 8 for batches in epochs for batch in batches)
    seen = [jet for batches in epochs for batch in batches for jet in batch]
    assert set(seen) == set(range(NUM_JETS))
    assert len(seen) - NUM_JETS < world_size * 8  # only the wrapped padding repeats
    per_rank = [{jet for batch in batches for jet in batch} for batches in epochs]
    assert sum(map(len, per_rank)) >= NUM_JETS  # ranks overlap only through the padding


@pytest.mark.parametrize("world_size", [2, 3])
def test_training_ranks_split_the_global_batches_of_one_rank(
    dataset: StagedDataset, world_size: int
) -> None:
    """W ranks of batch B train on exactly the batches of one rank of batch W * B (DDP == 1)."""
    one_rank = _loader(dataset, batch_size=4 * world_size)
    ranks = [
        _loader(dataset, batch_size=4, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    for _ in range(2):  # two epochs: the order changes, the split does not
        per_rank = [_epoch(loader) for loader in ranks]
        steps = zip(*per_rank, strict=True)
        global_batches = [[jet for part in parts for jet in part] for parts in steps]
        assert global_batches == _epoch(one_rank)


def test_shuffle_is_reproducible_per_seed_and_epoch(dataset: StagedDataset) -> None:
    loader = _loader(dataset, full_batches=False)
    first, second = _epoch(loader), _epoch(loader)
    assert loader.epoch == 2
    assert first != second
    assert sorted(j for b in first for j in b) == sorted(j for b in second for j in b)
    assert _epoch(_loader(dataset, full_batches=False)) == first
    assert _epoch(_loader(dataset, full_batches=False, seed=4)) != first
    assert _epoch(_loader(dataset, full_batches=False, prefetch=0)) == first


def test_epoch_order_is_a_block_local_permutation() -> None:
    order = epoch_order(1000, seed=1, epoch=0, shuffle=True, block_size=10, window_blocks=5)
    assert sorted(order.tolist()) == list(range(1000))
    windows_of_blocks = [set((order[i : i + 50] // 10).tolist()) for i in range(0, 1000, 50)]
    assert all(len(blocks) == 5 for blocks in windows_of_blocks)
    full = epoch_order(1000, seed=1, epoch=0, shuffle=True, block_size=10, window_blocks=100)
    assert not np.array_equal(full, order)
    assert np.array_equal(epoch_order(5, seed=1, epoch=0, shuffle=False, **SMALL_BLOCKS), range(5))


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resuming_mid_epoch_yields_the_uninterrupted_batches(
    dataset: StagedDataset, prefetch: int
) -> None:
    uninterrupted = _loader(dataset, prefetch=prefetch)
    expected = _epoch(uninterrupted) + _epoch(uninterrupted)

    interrupted = _loader(dataset, prefetch=prefetch)
    seen = []
    for batch in interrupted:
        seen.append(batch.labels.tolist())
        if len(seen) == 5:
            break
    # The state counts batches handed out, not the ones the prefetch thread made ahead.
    assert interrupted.state_dict() == {"epoch": 0, "batch_index": 5}
    resumed = _loader(dataset, prefetch=prefetch)
    resumed.load_state_dict(interrupted.state_dict())
    seen += _epoch(resumed) + _epoch(resumed)
    assert seen == expected


def test_checkpoint_state_is_checked(dataset: StagedDataset) -> None:
    loader = _loader(dataset)
    with pytest.raises(CheckpointError, match="not of the form"):
        loader.load_state_dict({"epoch": "one", "batch_index": 0})
    with pytest.raises(CheckpointError, match=r"batch 99 but an epoch has 13 batches"):
        loader.load_state_dict({"epoch": 0, "batch_index": 99})


def test_bad_settings_and_missing_arrays_are_reported(dataset: StagedDataset) -> None:
    with pytest.raises(ConfigError) as caught:
        _loader(
            dataset, batch_size=0, rank=2, world_size=2, prefetch=-1, io="gds", gather_threads=0
        )
    assert len(caught.value.problems) == 5
    assert "gather_threads must be at least 1, got 0" in str(caught.value)
    fields = {"points": "_pf_points", "features": "features", "mask": "mask", "labels": "labels"}
    with pytest.raises(DataError, match=r"no array '_pf_points' for batch field 'points'"):
        _loader(dataset, fields=fields)
    with pytest.raises(DataError, match=r"'features' .* needs int64"):
        _loader(dataset, fields={**fields, "points": "points", "labels": "features"})
    with pytest.raises(DataError, match="gets none"):
        _loader(
            _stage_indexed(dataset.root.parent / "tiny", 2),
            full_batches=False,
            rank=2,
            world_size=3,
        )


@pytest.mark.parametrize("full_batches", [True, False])
def test_threads_gather_the_batches_one_thread_gathers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_batches: bool
) -> None:
    """Shares of 64+ rows go to the pool; every share spans several shards of 37 jets."""
    dataset = _stage_indexed(tmp_path, 1000)
    copying_threads: set[str] = set()
    copy_rows = MmapReader._copy_rows

    def recording(self: MmapReader, *args: object) -> None:
        copying_threads.add(threading.current_thread().name)
        copy_rows(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(MmapReader, "_copy_rows", recording)
    settings = {"batch_size": 300, "full_batches": full_batches, "block_size": 64}
    one = _loader(dataset, gather_threads=1, **settings)
    expected = _epoch(one) + _epoch(one)
    assert not any(name.startswith("trainyard-gather") for name in copying_threads)
    three = _loader(dataset, gather_threads=3, **settings)
    assert _epoch(three) + _epoch(three) == expected
    assert len({n for n in copying_threads if n.startswith("trainyard-gather")}) == 2
    sizes = [len(batch) for batch in expected[:4]]
    assert sizes == ([300, 300, 300, 300] if full_batches else [300, 300, 300, 100])

    resumed = _loader(dataset, gather_threads=2, **settings)  # threads do not change the order
    resumed.load_state_dict({"epoch": 1, "batch_index": 2})
    assert _epoch(resumed) == expected[len(one) + 2 :]
    for loader in (one, three, resumed):
        loader.close()


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trainyard-prefetch")]


def test_leaving_the_loop_stops_the_prefetch_thread(dataset: StagedDataset) -> None:
    loader = _loader(dataset, prefetch=2)
    for _ in loader:
        assert len(_prefetch_threads()) == 1
        break
    assert _prefetch_threads() == []
    assert loader.state_dict() == {"epoch": 0, "batch_index": 1}


def test_prefetch_stays_a_bounded_number_ahead_and_closes_while_blocked() -> None:
    produced: list[int] = []

    def produce(index: int) -> int:
        produced.append(index)
        return index * 10

    prefetcher = Prefetcher(produce, range(1000), depth=2, name="trainyard-prefetch-test")
    items = iter(prefetcher)
    assert next(items) == (0, 0)
    assert next(items) == (1, 10)
    time.sleep(0.3)
    assert len(produced) <= 2 + 2 + 1  # handed out, queued, one waiting for room
    prefetcher.close()
    assert _prefetch_threads() == []


def test_a_reader_error_reaches_the_consumer_at_its_batch(
    dataset: StagedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = _loader(dataset, prefetch=2)
    gather = loader._reader._gather  # type: ignore[attr-defined]
    calls = []

    def failing_gather(jets: np.ndarray) -> JetBatch:
        calls.append(len(jets))
        if len(calls) == 4:
            raise DataError("shard 2 vanished")
        return gather(jets)

    monkeypatch.setattr(loader._reader, "_gather", failing_gather)
    received = 0
    with pytest.raises(DataError, match="shard 2 vanished"):
        for _ in loader:
            received += 1
    assert received == 3
    assert _prefetch_threads() == []
    assert loader.state_dict() == {"epoch": 0, "batch_index": 3}


def test_without_kvikio_a_cuda_target_falls_back_and_says_so(
    dataset: StagedDataset, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "kvikio", None)  # makes `import kvikio` fail
    with caplog.at_level(logging.INFO, logger="trainyard.data.staged.loader"):
        loader = _loader(dataset, device="cuda")
    assert loader.io == "mmap"
    assert "GPUDirect Storage is off: kvikio is not installed" in caplog.text
    assert "pinned memory" in caplog.text
    assert select_io("auto", torch.device("cpu")) == ("mmap", None)
    with pytest.raises(ConfigError, match="install kvikio-cu12"):
        select_io("kvikio", torch.device("cuda"))


class _FakeCuFile:
    """kvikio.CuFile's read interface over plain files, reading into CPU tensors."""

    def __init__(self, path: Path, flags: str) -> None:
        assert flags == "r"
        self._descriptor = os.open(path, os.O_RDONLY)

    def pread(self, buffer: torch.Tensor, size: int, file_offset: int) -> "_FakeCuFile":
        target = buffer.numpy().reshape(-1).view(np.uint8)
        assert target.nbytes == size
        assert os.preadv(self._descriptor, [target], file_offset) == size
        return self

    def get(self) -> int:
        return 0

    def close(self) -> None:
        os.close(self._descriptor)


def test_the_kvikio_path_reads_the_same_batches(
    dataset: StagedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kvikio", types.SimpleNamespace(CuFile=_FakeCuFile))
    for settings in (
        {},
        {"world_size": 3, "rank": 2},
        {"full_batches": False, "window_blocks": 1},
    ):
        kvikio_loader = _loader(dataset, io="kvikio", **settings)
        assert kvikio_loader.io == "kvikio"
        mmap_loader = _loader(dataset, io="mmap", **settings)
        assert _epoch(kvikio_loader) + _epoch(kvikio_loader) == _epoch(mmap_loader) + _epoch(
            mmap_loader
        )
        kvikio_loader.close()
    resumed = _loader(dataset, io="kvikio")
    resumed.load_state_dict({"epoch": 1, "batch_index": 7})
    reference = _loader(dataset, io="mmap")
    reference.load_state_dict({"epoch": 1, "batch_index": 7})
    assert _epoch(resumed) == _epoch(reference)
