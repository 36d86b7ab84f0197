"""Batches from staged shards: block-shuffled, split across ranks, resumable, prefetched.

The epoch order is a pure function of (seed, epoch), so resuming needs no replay and ranks
need no communication. It is shuffled in two levels so that reads stay large and sequential:
blocks of ``block_size`` consecutive jets are put in random order, then jets are shuffled
within each window of ``window_blocks`` blocks.

Training (``full_batches=True``): the order is cut into global batches of
world_size * batch_size jets, and rank r takes the r-th slice of batch_size jets of each, so
W ranks together train on exactly the batches one rank with W times the batch would (what
makes W-rank DDP equal to 1-rank training). Every rank yields the same number of full batches,
ceil(N / (world_size * batch_size)), and the order wraps around to its start to fill the last
one: every jet is seen at least once per epoch, and fewer than world_size * batch_size of the
jets handed out are repeats. Validation (``full_batches=False``): ranks take contiguous slices
of the order and every jet is seen exactly once across ranks: rank shares differ by at most
one jet, and the batch counts by at most one (the last batch of a rank may be short).

Array legend (suffixes give the shape):
    N  jets in the staged dataset
    S  jets this rank visits in one epoch, in visiting order
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping
from types import ModuleType

import numpy as np
import torch

from trainyard.data.batch import LABELS, JetBatch
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.prefetch import Prefetcher
from trainyard.data.staged.readers import (
    BatchReader,
    KvikioReader,
    MmapReader,
    batch_dtype,
    default_gather_threads,
)
from trainyard.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

PARTICLENET_FIELDS: Mapping[str, str] = {
    "points": "points",
    "features": "features",
    "mask": "mask",
    "labels": "labels",
}
"""JetBatch field -> staged array name, for data staged by ``ParticleNetSource``."""
WEAVER_PARTICLENET_FIELDS: Mapping[str, str] = {
    "points": "_pf_points",
    "features": "_pf_features",
    "mask": "_pf_mask",
    "labels": "_label_",
}
"""The same for ``WeaverConfigSource`` with a ParticleNet config (pf_points/features/mask).

weaver's ``_label_`` is the index in ``labels.value``: with [is_top, is_qcd] (the example config)
top is 0, so the signal class is 0 (``data.signal_class``), not the built-in inputs' 1.
"""
DEFAULT_BLOCK_SIZE = 1024
DEFAULT_WINDOW_BLOCKS = 32
IO_MODES = ("auto", "mmap", "kvikio")
_INPUT_NDIM = 2
"""Per-jet dimensions of a model input: (channels, particle slots); labels have none."""


class StagedLoader:
    """Iterate over a staged dataset in JetBatches; each ``iter()`` runs to the end of the epoch.

    ``device`` is where batches go: on CUDA they arrive there, gathered into pinned memory by
    the prefetch thread and copied with non_blocking=True, or read by kvikio straight into GPU
    memory (``io="auto"`` picks kvikio when it imports, ``"mmap"`` never does). ``prefetch``
    batches are prepared ahead on a background thread (0: on the caller's thread), each one
    gathered from the memory maps by ``gather_threads`` threads at once (default: torch's CPU
    thread budget, at most 4). Neither changes which jets a batch holds.
    """

    def __init__(
        self,
        dataset: StagedDataset,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        full_batches: bool = True,
        rank: int = 0,
        world_size: int = 1,
        fields: Mapping[str, str] = PARTICLENET_FIELDS,
        device: torch.device | str = "cpu",
        prefetch: int = 4,
        io: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window_blocks: int = DEFAULT_WINDOW_BLOCKS,
        gather_threads: int | None = None,
    ) -> None:
        gather_threads = default_gather_threads() if gather_threads is None else gather_threads
        _check_settings(
            batch_size=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            prefetch=prefetch,
            io=io,
            block_size=block_size,
            window_blocks=window_blocks,
            gather_threads=gather_threads,
            fields=fields,
        )
        _check_arrays(dataset, fields)
        self._num_jets = dataset.num_jets
        self._batch_size = batch_size
        self._shuffle = shuffle
        self._seed = seed
        self._full_batches = full_batches
        self._rank = rank
        self._world_size = world_size
        self._prefetch = prefetch
        self._block_size = block_size
        self._window_blocks = window_blocks
        self._device = torch.device(device)
        if full_batches:
            self._num_batches = -(-self._num_jets // (world_size * batch_size))
        else:
            self._num_batches = -(-self._rank_slice_unpadded()[1] // batch_size)
        if self._num_batches == 0:
            raise DataError(
                f"the staged dataset {dataset.root} has {self._num_jets} jets: rank {rank} of "
                f"{world_size} gets none; use fewer ranks or more jets"
            )
        self.io, kvikio = select_io(io, self._device)
        self._reader: BatchReader
        if kvikio is not None:
            self._reader = KvikioReader(
                dataset, fields, block_size=block_size, device=self._device, kvikio=kvikio
            )
        else:
            self._reader = MmapReader(
                dataset,
                fields,
                block_size=block_size,
                lookahead_jets=block_size * window_blocks,
                pin_memory=self._device.type == "cuda",
                gather_threads=gather_threads,
            )
        self._epoch = 0
        self._batch_index = 0

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._num_batches

    @property
    def batch_size(self) -> int:
        """Jets per batch on this rank."""
        return self._batch_size

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._epoch

    def __iter__(self) -> Iterator[JetBatch]:
        """Yield the rest of the current epoch; the state advances as each batch is handed out.

        After the last batch of an epoch the state already points at the next epoch. Leaving
        the loop early (break, exception) stops the prefetch thread.
        """
        epoch, start = self._epoch, self._batch_index
        produce = self._reader.epoch_producer(self._rank_jets(epoch), self._batch_size, start)
        indices = range(start, self._num_batches)
        prefetcher = None
        if self._prefetch:
            name = f"trainyard-prefetch-rank{self._rank}-epoch{epoch}"
            prefetcher = Prefetcher(produce, indices, depth=self._prefetch, name=name)
            items: Iterator[tuple[int, JetBatch]] = iter(prefetcher)
        else:
            items = ((index, produce(index)) for index in indices)
        copy_to_device = self._device.type == "cuda" and self.io == "mmap"
        try:
            for batch_index, batch in items:
                if batch_index + 1 == self._num_batches:
                    self._epoch, self._batch_index = epoch + 1, 0
                else:
                    self._batch_index = batch_index + 1
                yield batch.to(self._device, non_blocking=True) if copy_to_device else batch
        finally:
            if prefetcher is not None:
                prefetcher.close()

    def state_dict(self) -> dict[str, int]:
        """Where the next batch comes from; store it in checkpoints."""
        return {"epoch": self._epoch, "batch_index": self._batch_index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at ``state`` (from ``state_dict``); the data settings must be the same."""
        epoch, batch_index = state.get("epoch"), state.get("batch_index")
        if not isinstance(epoch, int) or not isinstance(batch_index, int) or epoch < 0:
            raise CheckpointError(
                f"data loader state {dict(state)} is not of the form "
                "{'epoch': int >= 0, 'batch_index': int}; the checkpoint is damaged or "
                "not from trainyard, start from another checkpoint"
            )
        if not 0 <= batch_index < self._num_batches:
            raise CheckpointError(
                f"data loader state points at batch {batch_index} but an epoch has "
                f"{self._num_batches} batches; the checkpoint was saved with another dataset, "
                "batch size or number of ranks, resume with the settings it was saved with"
            )
        self._epoch, self._batch_index = epoch, batch_index

    def close(self) -> None:
        """Release the shard files (iteration must have ended)."""
        self._reader.close()

    def _rank_jets(self, epoch: int) -> np.ndarray:
        """The jets this rank visits in ``epoch``, in order."""
        order_N = epoch_order(
            self._num_jets,
            seed=self._seed,
            epoch=epoch,
            shuffle=self._shuffle,
            block_size=self._block_size,
            window_blocks=self._window_blocks,
        )
        if self._full_batches:
            # Batch b of this rank: jets [b * W * B + r * B, b * W * B + (r + 1) * B) of the
            # order, i.e. this rank's slice of global batch b.
            global_batch, batch = self._world_size * self._batch_size, self._batch_size
            starts = np.arange(self._num_batches) * global_batch + self._rank * batch
            positions_S = (starts[:, None] + np.arange(batch)).reshape(-1)
            return order_N[positions_S % self._num_jets]
        start, size = self._rank_slice_unpadded()
        return order_N[start : start + size]

    def _rank_slice_unpadded(self) -> tuple[int, int]:
        """(start, size) of this rank's share when every jet is used exactly once."""
        base, extra = divmod(self._num_jets, self._world_size)
        return self._rank * base + min(self._rank, extra), base + (self._rank < extra)


def epoch_order(
    num_jets: int, *, seed: int, epoch: int, shuffle: bool, block_size: int, window_blocks: int
) -> np.ndarray:
    """The visiting order of all jets in ``epoch``: a permutation of range(num_jets).

    Without shuffle it is the stored order; with it, blocks are permuted, then jets within each
    window of ``window_blocks`` consecutive (permuted) blocks.
    """
    if not shuffle:
        return np.arange(num_jets)
    rng = np.random.default_rng([seed, epoch])
    num_blocks = -(-num_jets // block_size)
    block_order = rng.permutation(num_blocks)
    jets_in_block_order = (block_order[:, None] * block_size + np.arange(block_size)).reshape(-1)
    order_N = jets_in_block_order[jets_in_block_order < num_jets]
    window = block_size * window_blocks
    for start in range(0, num_jets, window):
        rng.shuffle(order_N[start : start + window])
    return order_N


def select_io(requested: str, device: torch.device) -> tuple[str, ModuleType | None]:
    """Which reader to use, and the kvikio module when it is kvikio; says why on a fallback."""
    if requested == "mmap":
        return "mmap", None
    try:
        kvikio = importlib.import_module("kvikio")
    except ImportError as error:
        if requested == "kvikio":
            raise ConfigError(
                [
                    f"io='kvikio' needs the kvikio package, which cannot be imported ({error}); "
                    "install kvikio-cu12 (or kvikio-cu11) or use io='auto'"
                ],
                source="staged loader settings",
            ) from error
        if device.type == "cuda":
            logger.info(
                "GPUDirect Storage is off: kvikio is not installed (%s). Batches are gathered "
                "from memory-mapped shards into pinned memory and copied to %s with "
                "non_blocking=True; install kvikio-cu12 to read shards straight into GPU memory",
                error,
                device,
            )
        return "mmap", None
    if requested == "auto" and device.type != "cuda":
        return "mmap", None
    logger.info("reading staged shards with kvikio.CuFile straight into %s memory", device)
    return "kvikio", kvikio


def _check_settings(
    *,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    prefetch: int,
    io: str,
    block_size: int,
    window_blocks: int,
    gather_threads: int,
    fields: Mapping[str, str],
) -> None:
    """Reject settings that cannot work, one line per problem."""
    problems = []
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if seed < 0:
        problems.append(f"seed must be a non-negative integer, got {seed}")
    if world_size < 1:
        problems.append(f"world_size must be at least 1, got {world_size}")
    elif not 0 <= rank < world_size:
        problems.append(f"rank must lie in [0, {world_size}), got {rank}")
    if prefetch < 0:
        problems.append(f"prefetch must be 0 (no thread) or more batches, got {prefetch}")
    if io not in IO_MODES:
        problems.append(f"io must be one of {IO_MODES}, got {io!r}")
    if block_size < 1 or window_blocks < 1:
        problems.append(
            f"block_size and window_blocks must be at least 1, got {block_size} and "
            f"{window_blocks}; defaults: {DEFAULT_BLOCK_SIZE} and {DEFAULT_WINDOW_BLOCKS}"
        )
    if gather_threads < 1:
        problems.append(f"gather_threads must be at least 1, got {gather_threads}")
    if LABELS not in fields or len(fields) < 2:
        problems.append(
            f"fields must map {LABELS!r} and the inputs the model takes (points, features, "
            f"mask, ... or a network file's input groups) to staged array names, got keys "
            f"{sorted(fields)}"
        )
    if problems:
        raise ConfigError(problems, source="staged loader settings")


def _check_arrays(dataset: StagedDataset, fields: Mapping[str, str]) -> None:
    """Each batch field's staged array exists, with the dtype and rank JetBatch needs."""
    for field, name in fields.items():
        spec = dataset.specs.get(name)
        if spec is None:
            raise DataError(
                f"the staged dataset {dataset.root} has no array {name!r} for batch field "
                f"{field!r}; it has {sorted(dataset.specs)}. Pass fields= naming those arrays"
            )
        needed_dtype = np.dtype(str(batch_dtype(field)).removeprefix("torch."))
        needed_ndim = 0 if field == LABELS else _INPUT_NDIM
        if spec.dtype != needed_dtype or len(spec.shape) != needed_ndim:
            raise DataError(
                f"staged array {name!r} in {dataset.root} is {spec.dtype} with per-jet shape "
                f"{spec.shape}, but batch field {field!r} needs {needed_dtype} with "
                f"{needed_ndim} per-jet dimension(s); map another array to it or "
                "stage the data again with the right types"
            )
