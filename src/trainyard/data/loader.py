"""Batches of in-memory jets for training, resumable mid-epoch and shardable across ranks.

The order of every epoch is a pure function of (seed, epoch), so a run restored from a
checkpoint sees exactly the batches an uninterrupted run would have seen, and each rank of a
distributed run can compute its share without talking to the others.

Array legend (suffixes give the shape):
    N  jets in the dataset
    S  jets this rank visits in one epoch, in visiting order
    B  jets in one batch
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from trainyard.data.features import JetArrays
from trainyard.errors import CheckpointError, ConfigError, DataError


@dataclass(frozen=True)
class JetBatch:
    """One batch of ParticleNet inputs as torch tensors."""

    points: torch.Tensor
    """float32 (B, 2, P)."""
    features: torch.Tensor
    """float32 (B, 7, P)."""
    mask: torch.Tensor
    """float32 (B, 1, P)."""
    labels: torch.Tensor
    """int64 (B,)."""

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> "JetBatch":
        """Move every tensor to ``device``; non_blocking overlaps copies from pinned memory."""
        return JetBatch(
            points=self.points.to(device, non_blocking=non_blocking),
            features=self.features.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )


class JetLoader:
    """Iterate over ``arrays`` in batches; each ``iter()`` runs to the end of the current epoch.

    The epoch order is ``np.random.default_rng([seed, epoch]).permutation`` (or the stored
    order without shuffle). With ``world_size`` ranks the first ``world_size * (N //
    world_size)`` jets of that order are dealt out round-robin, so ranks are disjoint, visit
    the same number of jets and batches, and together cover every jet once when N divides.
    """

    def __init__(
        self,
        arrays: JetArrays,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_settings(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
        self._arrays = arrays
        self._batch_size = batch_size
        self._shuffle = shuffle
        self._seed = seed
        self._rank = rank
        self._world_size = world_size
        self._num_jets_per_rank = len(arrays) // world_size
        if drop_last:
            self._num_batches = self._num_jets_per_rank // batch_size
        else:
            self._num_batches = -(-self._num_jets_per_rank // batch_size)
        if self._num_batches == 0:
            raise DataError(
                f"the dataset has {len(arrays)} jets, {self._num_jets_per_rank} per rank on "
                f"{world_size} rank(s): not enough for one batch of {batch_size} "
                f"(drop_last={drop_last}); lower the batch size or use more jets"
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

        After the last batch of an epoch the state already points at the next epoch, so a
        checkpoint taken then resumes at the start of that epoch.
        """
        order_S = self._rank_order(self._epoch)
        for batch_index in range(self._batch_index, self._num_batches):
            indices_B = order_S[
                batch_index * self._batch_size : (batch_index + 1) * self._batch_size
            ]
            batch = self._gather(indices_B)
            if batch_index + 1 == self._num_batches:
                self._epoch, self._batch_index = self._epoch + 1, 0
            else:
                self._batch_index = batch_index + 1
            yield batch

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

    def _rank_order(self, epoch: int) -> np.ndarray:
        """The jets this rank visits in ``epoch``, in order."""
        num_jets = len(self._arrays)
        if self._shuffle:
            order_N = np.random.default_rng([self._seed, epoch]).permutation(num_jets)
        else:
            order_N = np.arange(num_jets)
        used_N = order_N[: self._num_jets_per_rank * self._world_size]
        return used_N[self._rank :: self._world_size]

    def _gather(self, indices_B: np.ndarray) -> JetBatch:
        """Copy one batch out of the in-memory arrays into tensors."""
        arrays = self._arrays
        return JetBatch(
            points=torch.from_numpy(arrays.points_NCP[indices_B]),
            features=torch.from_numpy(arrays.features_NCP[indices_B]),
            mask=torch.from_numpy(arrays.mask_N1P[indices_B]),
            labels=torch.from_numpy(arrays.labels_N[indices_B]),
        )


def _check_settings(*, batch_size: int, seed: int, rank: int, world_size: int) -> None:
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
    if problems:
        raise ConfigError(problems, source="data loader settings")
