"""Trial packs on the Master's side: how many trials one worker trains (`resources.pack`).

The runner launches up to that many queued trials of an experiment in one worker process on
one slot (docs/packing.md, "Wiring"); this module decides the number, once per run, from the
experiment and the executor, and refuses a pack the executor cannot start. The runner's
record of its packed workers and their members is `pack_roster.PackRoster`.
"""

from __future__ import annotations

import logging

from trainyard.config import ExperimentConfig
from trainyard.config.packing import auto_pack_size
from trainyard.data.batch import DEFAULT_INPUT_ROLES
from trainyard.errors import ConfigError
from trainyard.executors import Executor
from trainyard.models import input_roles

logger = logging.getLogger(__name__)


def pack_size(config: ExperimentConfig, executor: Executor) -> int:
    """Trials per worker for this experiment on this executor (1: no packing).

    Raises:
        ConfigError: an explicit `resources.pack: K` (K > 1) on an executor that starts one
            trial per worker (none of the shipped ones: local, SLURM and Kubernetes pools all
            run packs; the `Executor.runs_packs` default, for a backend without worker keys).
    """
    pack = config.resources.pack
    if pack == "off":
        return 1
    if isinstance(pack, int):
        if pack > 1 and not executor.runs_packs:
            raise ConfigError(
                [
                    f"`resources.pack`: {pack} trials per worker, but the pool "
                    f"`{config.resources.pool}` runs on the {executor.name} executor, which "
                    "starts one trial per worker; set `resources.pack` to off or auto, or use "
                    "a local, SLURM or Kubernetes pool"
                ],
                source=f"experiment {config.name!r}",
            )
        return pack
    device_kind = executor.device_kind()
    roles = input_roles(config.model.name)
    if not executor.runs_packs or device_kind is None:
        size, why = 1, f"the {executor.name} executor starts one trial per worker"
    elif roles is None:
        size, why = 1, f"{config.model.name} is a weaver network file, which packs do not feed"
    elif roles != DEFAULT_INPUT_ROLES:
        size, why = 1, f"{config.model.name} is called as {roles.call}, which packs do not feed"
    else:
        size, why = auto_pack_size(
            device_kind=device_kind,
            model=config.model.name,
            searched=config.search_space_names(),
            slots_per_trial=config.resources.slots_per_trial,
            amp=config.training.amp,
        )
    logger.info("resources.pack: auto -> %d (%s)", size, why)
    return size
