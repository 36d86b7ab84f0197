"""Two ways to turn a list of jet indices into a JetBatch from staged shards.

``MmapReader`` gathers rows from memory-mapped shard files (the page cache holds the data) and
asks the kernel to read each block of jets a shuffle window ahead of use, so a cold cache is
filled with large sequential reads rather than page faults. Each batch is gathered by a few
threads at once, each copying a contiguous share of the batch's rows: numpy's take releases
the GIL, and one thread alone cannot keep up with memory once the data is cached.
``KvikioReader`` reads whole blocks straight into GPU memory with kvikio.CuFile (GPUDirect
Storage, or kvikio's own compatibility mode without it) and gathers batches there.

Both hand out one producer per epoch: a function of the batch index, called with consecutive
indices from one thread (the prefetch thread), because it keeps per-epoch state.

Array legend (suffixes give the shape):
    S  jets this rank visits in the epoch, in visiting order
    B  jets in one batch
    b  jets in one thread's share of a batch
    L  blocks of K jets (``block_size``) in the dataset
    X  the per-jet shape of one array
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch

from trainyard.data.batch import LABELS, JetBatch
from trainyard.data.staged.dataset import DATA_OFFSET, StagedDataset

BatchProducer = Callable[[int], JetBatch]
_NEVER = np.iinfo(np.int64).max
MAX_GATHER_THREADS = 4
"""Threads that gather one batch by default (fewer when torch may use fewer CPU threads)."""
_MIN_ROWS_PER_THREAD = 64
"""A share smaller than this costs more to hand to a thread than it takes to copy."""


def default_gather_threads() -> int:
    """Threads per batch gather: torch's CPU thread budget (set per slot), at most 4."""
    return max(1, min(MAX_GATHER_THREADS, torch.get_num_threads()))


class BatchReader(Protocol):
    """What the loader needs from a way of reading staged shards."""

    def epoch_producer(self, jets_S: np.ndarray, batch_size: int, start: int) -> BatchProducer:
        """A producer of batches ``start, start + 1, ...`` of ``jets_S``, in that order."""
        ...

    def close(self) -> None:
        """Release files and buffers."""
        ...


class _Layout:
    """Where the rows of a block of jets lie: which shard file, which rows, which bytes."""

    def __init__(self, dataset: StagedDataset, fields: Mapping[str, str], block_size: int):
        self.dataset = dataset
        self.fields = dict(fields)
        self.block_size = block_size
        self.num_blocks = -(-dataset.num_jets // block_size)
        self.row_bytes = {field: dataset.specs[name].row_bytes for field, name in fields.items()}

    def block_uses(
        self, jets_S: np.ndarray, batch_size: int, start: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first and last batch (from ``start`` on) that reads each block.

        Blocks no batch reads get _NEVER as first and -1 as last use.
        """
        jets = jets_S[start * batch_size :]
        batch_of_jet = start + np.arange(len(jets)) // batch_size
        block_of_jet = jets // self.block_size
        first_use_L = np.full(self.num_blocks, _NEVER)
        last_use_L = np.full(self.num_blocks, -1)
        np.minimum.at(first_use_L, block_of_jet, batch_of_jet)
        np.maximum.at(last_use_L, block_of_jet, batch_of_jet)
        return first_use_L, last_use_L

    def segments(self, block: int) -> list[tuple[int, int, int, int]]:
        """(shard, first row, end row, offset within the block) of each shard the block spans."""
        per_shard = self.dataset.jets_per_shard
        start = block * self.block_size
        stop = min(start + self.block_size, self.dataset.num_jets)
        parts = []
        jet = start
        while jet < stop:
            shard = jet // per_shard
            end = min(stop, (shard + 1) * per_shard)
            parts.append((shard, jet - shard * per_shard, end - shard * per_shard, jet - start))
            jet = end
        return parts


class MmapReader:
    """Gather from memory-mapped shards; pinned output when a CUDA device is the target."""

    def __init__(
        self,
        dataset: StagedDataset,
        fields: Mapping[str, str],
        *,
        block_size: int,
        lookahead_jets: int,
        pin_memory: bool,
        gather_threads: int,
    ) -> None:
        self._layout = _Layout(dataset, fields, block_size)
        self._lookahead_jets = lookahead_jets
        self._pin_memory = pin_memory
        self._shards = {field: dataset.open_arrays(name) for field, name in fields.items()}
        self._hint_files: dict[tuple[str, int], BinaryIO] = {}
        self._gather_threads = gather_threads
        # The calling thread copies one share itself, so the pool holds one thread fewer.
        self._pool = (
            ThreadPoolExecutor(gather_threads - 1, thread_name_prefix="trainyard-gather")
            if gather_threads > 1
            else None
        )

    def epoch_producer(self, jets_S: np.ndarray, batch_size: int, start: int) -> BatchProducer:
        # Per-epoch state lives in the closure, so two epochs never share it.
        first_use_L, _ = self._layout.block_uses(jets_S, batch_size, start)
        blocks = np.argsort(first_use_L, kind="stable")
        blocks = blocks[first_use_L[blocks] != _NEVER]
        first_uses = first_use_L[blocks]
        lookahead_batches = -(-self._lookahead_jets // batch_size)
        num_hinted = 0

        def produce(batch_index: int) -> JetBatch:
            nonlocal num_hinted
            horizon = batch_index + lookahead_batches
            num_due = int(np.searchsorted(first_uses, horizon, side="right"))
            self._will_need(blocks[num_hinted:num_due])
            num_hinted = max(num_hinted, num_due)
            return self._gather(jets_S[batch_index * batch_size : (batch_index + 1) * batch_size])

        return produce

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for file in self._hint_files.values():
            file.close()
        self._hint_files.clear()
        self._shards.clear()

    def _gather(self, jets_B: np.ndarray) -> JetBatch:
        """Copy the rows of ``jets_B`` into fresh (pinned) tensors, a share per thread."""
        targets = {
            field: torch.empty(
                (len(jets_B), *shards[0].shape[1:]),
                dtype=batch_dtype(field),
                pin_memory=self._pin_memory,
            )
            for field, shards in self._shards.items()
        }
        num_shares = min(self._gather_threads, max(1, len(jets_B) // _MIN_ROWS_PER_THREAD))
        bounds = np.linspace(0, len(jets_B), num_shares + 1).astype(np.int64).tolist()
        first, *others = itertools.pairwise(bounds)
        pending = []
        if others:
            assert self._pool is not None, "more than one share needs the pool"
            pending = [self._pool.submit(self._copy_rows, jets_B, targets, *o) for o in others]
        self._copy_rows(jets_B, targets, *first)
        for future in pending:
            future.result()
        return JetBatch.from_tensors(targets)

    def _copy_rows(
        self, jets_B: np.ndarray, targets: Mapping[str, torch.Tensor], lo: int, hi: int
    ) -> None:
        """Copy the jets of batch rows [lo, hi) into those rows of every target, one take per
        shard touched; threads given disjoint rows write disjoint memory."""
        jets_b = jets_B[lo:hi]
        per_shard = self._layout.dataset.jets_per_shard
        shard_b = jets_b // per_shard
        first_shard = int(shard_b[0])
        one_shard = bool((shard_b == first_shard).all())
        for field, shards in self._shards.items():
            target = targets[field].numpy()[lo:hi]
            if one_shard:
                rows_b = jets_b - first_shard * per_shard
                # mode="clip" lets take write straight into target (rows are in range anyway).
                np.take(shards[first_shard], rows_b, axis=0, out=target, mode="clip")
            else:
                for shard in np.unique(shard_b):
                    selected = np.flatnonzero(shard_b == shard)
                    target[selected] = shards[shard][jets_b[selected] - shard * per_shard]

    def _will_need(self, blocks: np.ndarray) -> None:
        """Ask the kernel to start reading these blocks into the page cache (non-blocking)."""
        layout = self._layout
        for block in blocks.tolist():
            for shard, first, end, _ in layout.segments(block):
                for field, name in layout.fields.items():
                    file = self._hint_files.get((field, shard))
                    if file is None:
                        file = layout.dataset.shard_path(name, shard).open("rb")
                        self._hint_files[(field, shard)] = file
                    row_bytes = layout.row_bytes[field]
                    os.posix_fadvise(
                        file.fileno(),
                        DATA_OFFSET + first * row_bytes,
                        (end - first) * row_bytes,
                        os.POSIX_FADV_WILLNEED,
                    )


class KvikioReader:
    """Read blocks with kvikio into a GPU slab sized for the blocks alive at once; gather there.

    A block is read when its first batch is produced and its slot is freed after its last
    one, so device memory holds about one shuffle window. Before a freed slot is refilled the
    producer waits for the gathers that read it, which run asynchronously on the stream.
    """

    def __init__(
        self,
        dataset: StagedDataset,
        fields: Mapping[str, str],
        *,
        block_size: int,
        device: torch.device,
        kvikio: ModuleType,
    ) -> None:
        self._layout = _Layout(dataset, fields, block_size)
        self._device = device
        self._shapes = {field: dataset.specs[name].shape for field, name in fields.items()}
        self._files: dict[tuple[str, int], Any] = {
            (field, shard): kvikio.CuFile(dataset.shard_path(name, shard), "r")
            for field, name in fields.items()
            for shard in range(len(dataset.shard_sizes))
        }

    def epoch_producer(self, jets_S: np.ndarray, batch_size: int, start: int) -> BatchProducer:
        layout = self._layout
        block_size = layout.block_size
        first_use_L, last_use_L = layout.block_uses(jets_S, batch_size, start)
        used = np.flatnonzero(last_use_L >= 0)
        used = used[np.argsort(first_use_L[used], kind="stable")]
        # Blocks alive at batch i are those with first <= i <= last; the slab holds the peak.
        alive_change = np.zeros(int(last_use_L.max()) + 2, dtype=np.int64)
        np.add.at(alive_change, first_use_L[used], 1)
        np.add.at(alive_change, last_use_L[used] + 1, -1)
        num_slots = int(np.cumsum(alive_change).max())
        slabs = {
            field: torch.empty(
                (num_slots * block_size, *shape), dtype=batch_dtype(field), device=self._device
            )
            for field, shape in self._shapes.items()
        }
        slot_L = np.full(layout.num_blocks, -1, dtype=np.int64)
        free_slots = list(range(num_slots))
        next_to_load = 0
        released: torch.cuda.Event | None = None

        def produce(batch_index: int) -> JetBatch:
            nonlocal next_to_load, released
            loading = []
            while next_to_load < len(used) and first_use_L[used[next_to_load]] == batch_index:
                loading.append(int(used[next_to_load]))
                next_to_load += 1
            if loading and released is not None:
                released.synchronize()  # gathers from freed slots must finish before reuse
            for block in loading:
                slot_L[block] = free_slots.pop()
            self._read_blocks(loading, slot_L, slabs)
            jets_B = jets_S[batch_index * batch_size : (batch_index + 1) * batch_size]
            slab_rows_B = slot_L[jets_B // block_size] * block_size + jets_B % block_size
            index_B = torch.from_numpy(slab_rows_B).to(self._device)
            batch = JetBatch.from_tensors(
                {field: slab.index_select(0, index_B) for field, slab in slabs.items()}
            )
            finished = used[last_use_L[used] == batch_index]
            if len(finished):
                free_slots.extend(slot_L[finished].tolist())
                slot_L[finished] = -1
                if self._device.type == "cuda":
                    released = torch.cuda.Event()
                    released.record()
            return batch

        return produce

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()

    def _read_blocks(
        self, blocks: list[int], slot_L: np.ndarray, slabs: dict[str, torch.Tensor]
    ) -> None:
        """Read every array of ``blocks`` into their slots; kvikio runs the reads in parallel."""
        block_size = self._layout.block_size
        futures = []
        for block in blocks:
            for shard, first, end, offset in self._layout.segments(block):
                slab_row = int(slot_L[block]) * block_size + offset
                for field, slab in slabs.items():
                    row_bytes = self._layout.row_bytes[field]
                    target = slab[slab_row : slab_row + end - first]
                    futures.append(
                        self._files[(field, shard)].pread(
                            target, (end - first) * row_bytes, DATA_OFFSET + first * row_bytes
                        )
                    )
        for future in futures:
            future.get()


def batch_dtype(field: str) -> torch.dtype:
    """The dtype of a JetBatch field: int64 class indices, float32 inputs; the loader checks
    that staged arrays match."""
    return torch.int64 if field == LABELS else torch.float32
