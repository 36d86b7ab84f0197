"""The data step of a trial: stage the inputs once, then read them memory-mapped.

The training and validation files are staged (preprocessed into fixed-shape shards,
`data/staging.py`) under the trial spec's ``staging_dir``, the Master's
``<home>/cache/staged``, keyed by the files (path, size, mtime) and the data settings. The first
trial that needs a key stages it; later trials, resumed trials and the trial's other ranks find
it and reuse it. Rank 0 stages while the other ranks wait for the finished folder (no
collective, so a long staging cannot time out a process group); another trial staging the same
key at the same time holds its flock and this one waits, heartbeating, then reuses its result.

What is staged: the built-in ParticleNet inputs (`ParticleNetSource`, ``data.max_particles``)
or, with ``data.config``, weaver's arrays for that data config (`WeaverConfigSource`). The
validation files of a weaver config are staged as weaver's validation loader reads them: in
training mode (the training ``selection``, labels checked) and standardised with what the
training files gave (the training manifest's completed config).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainyard.config.schema import DataSpec
from trainyard.data.batch import DEFAULT_INPUT_ROLES, InputRoles
from trainyard.data.model_inputs import ModelInputs, model_inputs
from trainyard.data.reader import resolve_files
from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.loader import StagedLoader
from trainyard.data.staged.sources import (
    ChunkSource,
    ParticleNetSource,
    WeaverConfigSource,
    source_key,
    stage_source,
)
from trainyard.data.staged.staging import find_staged
from trainyard.data.weaver.parser import parse_weaver_config
from trainyard.worker.distributed import World
from trainyard.worker.evaluation import ValidationShard

logger = logging.getLogger(__name__)

WAIT_POLL_S = 0.2
"""How often a rank other than 0 looks for the folder rank 0 is staging."""


@dataclass
class TrialData:
    """A trial's loaders and what its inputs mean for the model."""

    train_loader: StagedLoader
    """Shuffled full batches of this rank's share of each global batch; resumable."""
    val_shard: ValidationShard
    inputs: ModelInputs
    train: StagedDataset
    val: StagedDataset


def load_trial_data(
    data: DataSpec,
    *,
    roles: InputRoles | None = DEFAULT_INPUT_ROLES,
    model: str = "the model",
    staging_dir: Path,
    batch_size: int,
    seed: int,
    world: World,
    device: torch.device,
    on_progress: Callable[[], None],
) -> TrialData:
    """Stage (or reuse) the training and validation sets and open their loaders.

    ``roles`` are the inputs the model (named ``model`` in messages) takes: only those are
    loaded, and the built-in inputs stage Lorentz vectors when it takes them; None (a weaver
    network file) loads every input group of the data config.
    ``batch_size`` is this rank's share of the global batch; ``on_progress`` (rank 0's
    heartbeat) is called while staging and while waiting for another stager.
    """
    inputs = model_inputs(data, roles=roles, model=model)
    if inputs.classes is not None and inputs.classes.background is None:
        logger.warning(
            "no background class: the per-class rejections (val_rej50_<class>, ...) are not "
            "reported; set data.background_class to the class they are measured against"
        )
    train_files, val_files = resolve_files(data.train), resolve_files(data.val)
    train_source: ChunkSource
    if inputs.weaver_config is None:
        train_source = ParticleNetSource(
            train_files, max_particles=data.max_particles, vectors=inputs.vectors
        )
    else:
        assert data.config is not None
        train_source = WeaverConfigSource(train_files, Path(data.config), training=True)
        if inputs.weaver_config.weights is not None:
            logger.warning(
                "the data config's `weights` section is staged (as _weight_) but not applied: "
                "trainyard draws every training jet once per epoch"
            )
    train = _staged(train_source, "training", staging_dir, world, on_progress)
    val = _staged(
        _val_source(val_files, data, inputs, train), "validation", staging_dir, world, on_progress
    )
    train_loader = StagedLoader(
        train,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        full_batches=True,
        rank=world.rank,
        world_size=world.size,
        fields=inputs.fields,
        device=device,
    )
    val_shard = ValidationShard(
        val,
        batch_size=batch_size,
        world=world,
        fields=inputs.fields,
        device=device,
        signal_class=inputs.signal_class,
        classes=inputs.classes,
    )
    return TrialData(train_loader, val_shard, inputs, train, val)


def _val_source(
    files: list[Path], data: DataSpec, inputs: ModelInputs, train: StagedDataset
) -> ChunkSource:
    """The validation files, made as weaver's val loader makes them (see the module doc)."""
    if inputs.weaver_config is None:
        return ParticleNetSource(files, max_particles=data.max_particles, vectors=inputs.vectors)
    assert data.config is not None
    completed = parse_weaver_config(
        train.extra["data_config"], source=f"the completed data config in {train.root}"
    )
    # A config that needed nothing from the training files keeps the plain key, which
    # `trainyard data stage --data-config` gives too.
    prepared = None if completed == inputs.weaver_config else completed
    return WeaverConfigSource(files, Path(data.config), training=True, prepared=prepared)


def _staged(
    source: ChunkSource,
    what: str,
    cache_root: Path,
    world: World,
    on_progress: Callable[[], None],
) -> StagedDataset:
    """Rank 0 stages or reuses ``source``; the other ranks wait for its folder."""
    key = source_key(source)
    if not world.is_primary:
        while (found := find_staged(cache_root, key)) is None:
            time.sleep(WAIT_POLL_S)
        return found
    found = find_staged(cache_root, key)
    if found is not None:
        logger.info(
            "reusing staged %s data %s (%d jets from %d file(s))",
            what,
            found.root,
            found.num_jets,
            len(source.files),
        )
        return found
    logger.info("staging %s data from %d file(s) into %s", what, len(source.files), cache_root)
    started = time.perf_counter()
    dataset = stage_source(source, cache_root, on_progress=on_progress)
    logger.info(
        "staged %s data %s: %d jets, %.1f MB in %.1f s",
        what,
        dataset.root,
        dataset.num_jets,
        dataset.num_bytes / 1e6,
        time.perf_counter() - started,
    )
    return dataset
