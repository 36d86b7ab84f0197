"""Which rank this process is, from torchrun's variables, and agreement between ranks.

trainyard starts every rank of a script trial under torchrun's conventions (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so this reads them only; it never
starts a process group. When the script has started one, `agree_any` uses it, so every rank
stops at the same step; torch is used only if the script imported it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DistributedInfo:
    """This process's place among the trial's ranks."""

    rank: int
    """Global rank, 0 to size - 1."""
    size: int
    """Ranks of the trial (WORLD_SIZE)."""
    local_rank: int
    """Rank on this node, e.g. the GPU index to use."""
    local_size: int
    """Ranks on this node."""

    @property
    def is_chief(self) -> bool:
        """Rank 0: the one rank that reports to the Master and registers checkpoints."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistributedInfo:
        """torchrun's variables; one rank when they are unset (a script run by hand)."""
        size = _env_int("WORLD_SIZE", 1)
        return cls(
            rank=_env_int("RANK", 0),
            size=size,
            local_rank=_env_int("LOCAL_RANK", 0),
            local_size=_env_int("LOCAL_WORLD_SIZE", size),
        )


def agree_any(flag: bool, info: DistributedInfo) -> bool:
    """True on every rank when it is True on any, through the script's own process group.

    A collective: with a process group, every rank must call it at the same points. Without
    one (or with one rank) each rank keeps its own answer.
    """
    dist = sys.modules.get("torch.distributed")
    if info.size == 1 or dist is None or not dist.is_available() or not dist.is_initialized():
        return flag
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, flag)
    return any(bool(value) for value in gathered)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number as torchrun sets it, not {value!r}")
    return int(value)
