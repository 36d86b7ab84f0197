"""Model and optimizer state in a form that loads on any number of ranks, under any wrapper.

torch.distributed.checkpoint's get_state_dict / set_state_dict give unwrapped parameter names
(no DDP "module." prefix) and optimizer state keyed by those names, so a checkpoint written by
one rank, by DDP or by FSDP loads into any of them. Whole ("full") state goes into state.pt;
FSDP's sharded state goes through torch.distributed.checkpoint, which reshards on load.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from trainyard.worker.checkpoint import MODEL, OPTIMIZER, CheckpointManager, LoadedCheckpoint


def trained_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, sharded: bool
) -> dict[str, Any]:
    """{MODEL: ..., OPTIMIZER: ...}: each rank's shards, or (on rank 0) the whole state."""
    model_state, optimizer_state = get_state_dict(
        model,
        optimizer,
        options=StateDictOptions(full_state_dict=not sharded, cpu_offload=not sharded),
    )
    return {MODEL: model_state, OPTIMIZER: optimizer_state}


def load_trained_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loaded: LoadedCheckpoint,
    checkpointer: CheckpointManager,
) -> None:
    """Put a checkpoint's model and optimizer state into this run's (wrapped) ones."""
    if loaded.shards is not None:
        # Ask for the state as this run holds it; DCP fills it from however it was written.
        target = trained_state(model, optimizer, sharded=True)
        checkpointer.load_shards(loaded, target)
        options = StateDictOptions()
    else:
        target = loaded.state
        options = StateDictOptions(full_state_dict=True)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=target[MODEL],
        optim_state_dict=target[OPTIMIZER],
        options=options,
    )
