"""Capture and restore every global random number generator a training step can draw from.

Exact resume needs dropout masks, shuffles and augmentations after a restart to be the ones an
uninterrupted run would have drawn, so the states of Python's `random`, numpy's global RNG,
torch's CPU generator and each CUDA device's generator all go into the checkpoint. They are
stored as tensors and plain Python values only, so `torch.load(..., weights_only=True)` reads
them back without unpickling arbitrary objects.

A packed trial (worker/packing) shares its process with other trials, so its dropout draws
from a generator of its own (`own_generator`, used through `drawing_from`); its checkpoint
stores that generator's state where a solo trial's stores its device's default generator
(`capture_rng_state(own=...)`), so either resumes the other.
"""

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from trainyard.errors import CheckpointError

logger = logging.getLogger(__name__)

PYTHON = "python"
NUMPY = "numpy"
TORCH = "torch"
CUDA = "cuda"


def capture_rng_state(own: torch.Generator | None = None) -> dict[str, Any]:
    """Return the state of every global RNG, in a form that weights_only loading accepts.

    With `own` (a packed trial's generator), its state stands in for that of its device's
    default generator, so the checkpoint reads as the solo trial's would.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    cpu = torch.get_rng_state()
    cuda = (
        [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    if own is not None and own.device.type == "cuda":
        cuda[_cuda_index(own.device)] = own.get_state()
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
        TORCH: own.get_state() if own is not None and own.device.type == "cpu" else cpu,
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


def own_generator(device: torch.device) -> torch.Generator:
    """A new generator on `device` holding the state its default generator has now: a trial
    that draws from it from here on draws what it would have drawn from the default one."""
    generator = torch.Generator(device)
    generator.set_state(_default_generator(device).get_state())
    return generator


@contextlib.contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Random ops on the generator's device draw from `generator` inside, by the very kernels
    they use with the default generator (CUDA's fused dropout takes no generator argument):
    the default generator holds `generator`'s state inside and gets its own back after, and
    `generator` keeps what was drawn. Costs a few microseconds (states live on the host).
    Another thread drawing from the default generator meanwhile would draw from `generator`'s
    stream: the worker's other threads (heartbeats) draw nothing."""
    default = _default_generator(generator.device)
    saved = default.get_state()
    default.set_state(generator.get_state())
    try:
        if generator.device.type == "cuda":  # the fused kernels use the current device's
            with torch.cuda.device(generator.device):
                yield
        else:
            yield
    finally:
        generator.set_state(default.get_state())
        default.set_state(saved)


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        torch.cuda.init()  # the default generators exist once CUDA is initialised
        return torch.cuda.default_generators[_cuda_index(device)]
    raise ValueError(f"no per-trial random generator for device {device}; use cpu or cuda")


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


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
