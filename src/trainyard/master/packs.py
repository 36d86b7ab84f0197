"""Trial packs on the Master's side: how many trials one worker trains (`resources.pack`).

The runner launches up to that many queued trials of an experiment in one worker process on
one slot (docs/packing.md, "Wiring"); this module decides the number, once per run, from the
experiment and the executor, and refuses a pack the executor cannot start; `PackRoster` is
the runner's record of its packed workers and their members, joined ones included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trainyard.config import ExperimentConfig
from trainyard.config.packing import auto_pack_size
from trainyard.data.batch import DEFAULT_INPUT_ROLES
from trainyard.errors import ConfigError
from trainyard.executors import Executor
from trainyard.models import input_roles
from trainyard.protocol import TrialOut, TrialState

logger = logging.getLogger(__name__)


def pack_size(config: ExperimentConfig, executor: Executor) -> int:
    """Trials per worker for this experiment on this executor (1: no packing).

    Raises:
        ConfigError: an explicit `resources.pack: K` (K > 1) on an executor that starts one
            trial per worker.
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
                    "a local pool"
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


@dataclass
class _Pack:
    pid: int | None
    members: list[int]
    """Every trial the pack's worker took: those it started with, then those that joined."""


class PackRoster:
    """The runner's packed workers: each one's pid and members, keyed by its host trial's id
    (the executor's key). Members that joined later (master/pack_joins.py) are learnt from the
    store: a trial RUNNING under a pack's pid is that pack's."""

    def __init__(self) -> None:
        self._packs: dict[int, _Pack] = {}

    def add(self, host_id: int, trial_ids: list[int], pid: int | None) -> None:
        self._packs[host_id] = _Pack(pid=pid, members=list(trial_ids))

    def members(self, worker_id: int) -> list[int]:
        """The trials a worker trains: its pack's members, or its own trial alone."""
        pack = self._packs.get(worker_id)
        return list(pack.members) if pack else [worker_id]

    def pop(self, worker_id: int) -> list[int]:
        """Forget a worker that exited; returns the trials it trained."""
        pack = self._packs.pop(worker_id, None)
        return pack.members if pack else [worker_id]

    def adopt_joined(self, trials: list[TrialOut]) -> list[tuple[int, TrialOut]]:
        """Add each trial RUNNING under a pack's pid that the pack does not list yet; returns
        (host id, trial) of each one added."""
        adopted = []
        for host_id, pack in self._packs.items():
            for trial in trials:
                joined = trial.state is TrialState.RUNNING and trial.worker_pid is not None
                if joined and trial.worker_pid == pack.pid and trial.id not in pack.members:
                    pack.members.append(trial.id)
                    adopted.append((host_id, trial))
        return adopted

    def free_places(self, trials: list[TrialOut], size: int) -> int:
        """Places left by members that ended, which the packs' workers fill by joins."""
        running = {t.id for t in trials if t.state is TrialState.RUNNING}
        in_packs = [len(running.intersection(pack.members)) for pack in self._packs.values()]
        # A pack with no member left is exiting: it takes no one.
        return sum(max(0, size - num) for num in in_packs if num > 0)
