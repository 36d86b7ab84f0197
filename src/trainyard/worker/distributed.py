"""One trial on several processes: the process group from torchrun's environment, and the few
collectives the training loop needs besides DDP's and FSDP's own.

The local executor starts a multi-slot trial under torchrun's elastic agent, which sets RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. A worker started
without it is a world of one, where every collective below returns its input, so the
single-slot path runs the same code without a process group.

Every collective here moves small CPU tensors through gloo (also next to NCCL on GPUs), and
a failed one raises PeerFailedError: when a rank dies, the others must end too, not wait.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from trainyard.errors import TrainyardError
from trainyard.worker.lifetime import die_with_agent

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a collective raises when another rank died: gloo's socket errors, c10d's own errors.
_PEER_FAILURE_MARKERS = ("gloo/transport", "Connection closed by peer", "Connection reset by peer")


class PeerFailedError(TrainyardError):
    """A collective failed because another rank of the trial died or hung up."""


@dataclass(frozen=True)
class World:
    """This process's place among the trial's ranks."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    """Ranks in the trial (torchrun's WORLD_SIZE)."""
    local_size: int = 1
    """Ranks on this machine, which share its memory."""

    @classmethod
    def from_env(cls) -> World:
        """Read torchrun's variables; without them this is a world of one."""
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            size=int(os.environ.get("WORLD_SIZE", "1")),
            local_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        )

    @property
    def is_primary(self) -> bool:
        """Rank 0: the only rank that talks to the Master and writes shared files."""
        return self.rank == 0

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all ranks (an all-reduce max), so every rank acts alike."""
        if self.size == 1:
            return flags
        values = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        with _collective("combining stop flags"):
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in values.tolist())

    def sum(self, value: float) -> float:
        """`value` summed over all ranks, in float64."""
        if self.size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        with _collective("summing a metric"):
            dist.all_reduce(total)
        return float(total.item())

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (other ranks pass a placeholder, e.g. None)."""
        if self.size == 1:
            return obj
        box = [obj]
        with _collective("receiving rank 0's data"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's `obj`, in rank order, on rank 0; None on the other ranks.

        `obj` travels as torch.save bytes (gather_object cannot unpickle tensors), so it may
        hold what torch.load(weights_only=True) reads: tensors, numbers, strings, containers.
        """
        if self.size == 1:
            return [obj]
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        gathered: list[Any] | None = [None] * self.size if self.is_primary else None
        with _collective("gathering to rank 0"):
            dist.gather_object(buffer.getvalue(), gathered, dst=0)
        if gathered is None:
            return None
        return [torch.load(io.BytesIO(data), weights_only=True) for data in gathered]

    def all_gather_array(self, values: np.ndarray) -> np.ndarray:
        """Concatenate 1-d arrays of any length from all ranks (in rank order) on every rank."""
        if self.size == 1:
            return values
        local = torch.from_numpy(np.ascontiguousarray(values))
        lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        with _collective("gathering validation results"):
            dist.all_gather(lengths, torch.tensor([len(local)], dtype=torch.int64))
            # all_gather needs equal shapes: pad to the longest, then cut the padding off.
            longest = max(int(length.item()) for length in lengths)
            padded = torch.zeros(longest, dtype=local.dtype)
            padded[: len(local)] = local
            parts = [torch.empty_like(padded) for _ in range(self.size)]
            dist.all_gather(parts, padded)
        pieces = [part[: int(n.item())].numpy() for part, n in zip(parts, lengths, strict=True)]
        return np.concatenate(pieces)


def init_distributed() -> World:
    """Join the trial's process group when torchrun started us; a no-op for one process.

    gloo carries CPU tensors and NCCL CUDA tensors, so the small collectives above never
    wait for a GPU and a `device: cpu` trial on a GPU machine still works.
    """
    world = World.from_env()
    if world.size == 1:
        return world
    die_with_agent()
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    with _collective("joining the process group"):
        dist.init_process_group(backend=backend)
    logger.info("rank %d of %d joined the process group (%s)", world.rank, world.size, backend)
    return world


def close_distributed() -> None:
    """Leave the process group, if we joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_peer_failure(err: BaseException) -> bool:
    """Whether `err` came from a collective that another rank's death broke.

    DDP's and FSDP's collectives (inside forward and backward) raise a plain RuntimeError
    naming the transport, so those are recognised by their message.
    """
    if isinstance(err, PeerFailedError | dist.DistError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _PEER_FAILURE_MARKERS)


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as err:
        raise PeerFailedError(f"{what} failed ({err})") from err
