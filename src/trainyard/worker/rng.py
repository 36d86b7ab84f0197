"""Capture and restore every global random number generator a training step can draw from.

Exact resume needs dropout masks, shuffles and augmentations after a restart to be the ones an
uninterrupted run would have drawn, so the states of Python's `random`, numpy's global RNG,
torch's CPU generator and each CUDA device's generator all go into the checkpoint. They are
stored as tensors and plain Python values only, so `torch.load(..., weights_only=True)` reads
them back without unpickling arbitrary objects.
"""

import logging
import random
from typing import Any

import numpy as np
import torch

from trainyard.errors import CheckpointError

logger = logging.getLogger(__name__)

PYTHON = "python"
NUMPY = "numpy"
TORCH = "torch"
CUDA = "cuda"


def capture_rng_state() -> dict[str, Any]:
    """Return the state of every global RNG, in a form that weights_only loading accepts."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    cuda = (
        [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        # MT19937 words are < 2**32, so int64 holds them without loss.
        PYTHON: {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        NUMPY: {
            "bit_generator": name,
            "keys": torch.from_numpy(keys.copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        TORCH: torch.get_rng_state(),
        CUDA: cuda,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every global RNG back to the state `capture_rng_state` returned.

    Raises CheckpointError when the state is incomplete, since resuming with fresh generators
    would silently break reproducibility.
    """
    try:
        py, npy, cpu, cuda = state[PYTHON], state[NUMPY], state[TORCH], state[CUDA]
        random.setstate(
            (py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"])
        )
        np.random.set_state(
            (
                npy["bit_generator"],
                npy["keys"].numpy(),
                npy["pos"],
                npy["has_gauss"],
                npy["cached_gaussian"],
            )
        )
        torch.set_rng_state(cpu)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"the RNG state in the checkpoint is incomplete or malformed ({exc!r}); "
            "it was not written by this version of trainyard, so the run cannot resume exactly"
        ) from exc
    _restore_cuda(cuda)


def seed_all(*entropy: int) -> int:
    """Seed Python's random, numpy and torch (every device) from `entropy`; return the seed.

    For streams that must differ per rank yet be reproducible, e.g. `seed_all(seed, rank)`.
    """
    seed = int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def _restore_cuda(states: list[torch.Tensor]) -> None:
    """Restore per-device CUDA states; a changed device count only warns, as GPU runs are
    not bit-exact anyway and refusing to resume would lose the run."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(states) != available:
        logger.warning(
            "checkpoint has RNG states for %d CUDA device(s) but %d are visible now; "
            "restoring the first %d, so GPU random draws will differ from an uninterrupted run",
            len(states),
            available,
            min(len(states), available),
        )
    for index, device_state in enumerate(states[:available]):
        torch.cuda.set_rng_state(device_state, index)
