"""One pool's slots shared by the experiments a server runs at once.

Each experiment's runner sees its own `ExperimentSlots`, an `Executor` that lists only that
experiment's workers and offers only its fair share of the pool's free slots, so the runner
works unchanged whether it has a pool to itself (`trainyard run`) or shares it (`trainyard
server`). The share is set by the facility loop from `scheduler.fair_share.split_offer`.

Thread safety: every runner runs in a thread of its own, and neither `LocalExecutor` nor
`SlurmExecutor` locks its bookkeeping (the local fork server does lock its pipe). So every
call into a pool's executors goes through the pool's one lock. A local pool has one executor
for all experiments (it owns the GPUs / CPU slots and assigns them); a SLURM pool gets one
executor per experiment, as `trainyard run` has, so job names keep the experiment's name and
a restarted server finds each experiment's leftover jobs; its slots are counted here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from trainyard.executors.base import Executor, SlotsTaken, WorkerLaunch

ExecutorFactory = Callable[[str], Executor]
"""Opens an executor of the pool for an experiment (by name)."""


class PoolShare:
    """A pool's slots, its executors, and each experiment's offer and holding."""

    def __init__(self, name: str, *, open_executor: ExecutorFactory, shared: bool) -> None:
        """`shared`: one executor serves every experiment (a local pool); else one each."""
        self.name = name
        self._open_executor = open_executor
        self._lock = threading.Lock()
        self._shared = open_executor("shared") if shared else None
        self._probe = self._shared or open_executor("probe")
        self.capacity = self._probe.capacity()
        self._offers: dict[int, int] = {}
        self._held: dict[int, dict[int, int]] = {}
        """Experiment id -> its launched trials (worker id) -> their slots."""
        self._started: dict[int, float] = {}
        """Worker id -> when it was launched (monotonic), for preemption's minimum run time."""

    def probe(self, experiment: str) -> Executor:
        """An executor of this pool for checks before storing an experiment (preflight,
        packing); the caller closes it."""
        return self._shared_view() if self._shared else self._open_executor(experiment)

    def slots_for(self, experiment_id: int, experiment: str) -> ExperimentSlots:
        """The executor a runner of this experiment uses."""
        own = None if self._shared else self._open_executor(experiment)
        with self._lock:
            self._held.setdefault(experiment_id, {})
            self._offers.setdefault(experiment_id, 0)
        return ExperimentSlots(self, experiment_id, own)

    def set_offers(self, offers: dict[int, int]) -> None:
        """Each experiment's share of the pool, in slots (held ones included)."""
        with self._lock:
            self._offers = {**dict.fromkeys(self._held, 0), **offers}

    def held(self, experiment_id: int) -> int:
        with self._lock:
            return sum(self._held.get(experiment_id, {}).values())

    def running_since(self, experiment_id: int) -> dict[int, tuple[int, float]]:
        """The experiment's workers -> (their slots, seconds since launch)."""
        now = time.monotonic()
        with self._lock:
            held = self._held.get(experiment_id, {})
            return {w: (slots, now - self._started.get(w, now)) for w, slots in held.items()}

    def forget(self, experiment_id: int) -> None:
        """The experiment's runner ended; its workers were reaped or stopped."""
        with self._lock:
            self._held.pop(experiment_id, None)
            self._offers.pop(experiment_id, None)

    def close(self) -> None:
        with self._lock:
            self._probe.close()

    @property
    def executor_name(self) -> str:
        """The backend's name (local, slurm, kubernetes)."""
        return self._probe.name

    def free(self) -> int:
        """Slots no experiment holds now."""
        with self._lock:
            return self._free_total()

    def _shared_view(self) -> Executor:
        return ExperimentSlots(self, 0, None)

    def _free_total(self) -> int:
        return self.capacity - sum(sum(held.values()) for held in self._held.values())


class ExperimentSlots(Executor):
    """One experiment's view of a pool: its own workers, its share of the free slots."""

    def __init__(self, pool: PoolShare, experiment_id: int, own: Executor | None) -> None:
        self._pool = pool
        self._id = experiment_id
        self._own = own
        self._executor = own or pool._probe
        self.name = self._executor.name
        self.runs_packs = self._executor.runs_packs

    def capacity(self) -> int:
        return self._pool.capacity

    def free_slots(self) -> int:
        with self._pool._lock:
            held = sum(self._pool._held.get(self._id, {}).values())
            offer = self._pool._offers.get(self._id, self._pool.capacity)
            return max(0, min(offer - held, self._pool._free_total()))

    def launch(self, launch: WorkerLaunch) -> None:
        with self._pool._lock:
            free = self._pool._free_total()
            if launch.num_slots > free:
                raise SlotsTaken(
                    f"pool {self._pool.name!r} has {free} free slot(s), trial "
                    f"{launch.trial_id} needs {launch.num_slots}"
                )
            self._executor.launch(launch)
            self._pool._held.setdefault(self._id, {})[launch.trial_id] = launch.num_slots
            self._pool._started[launch.trial_id] = time.monotonic()

    def poll(self, trial_id: int) -> int | None:
        with self._pool._lock:
            code = self._executor.poll(trial_id)
            if code is not None:
                self._pool._held.get(self._id, {}).pop(trial_id, None)
                self._pool._started.pop(trial_id, None)
            return code

    def running(self) -> list[int]:
        with self._pool._lock:
            return list(self._pool._held.get(self._id, {}))

    def stop(self, trial_id: int) -> None:
        with self._pool._lock:
            self._executor.stop(trial_id)

    def kill(self, trial_id: int) -> None:
        with self._pool._lock:
            self._executor.kill(trial_id)

    def worker_key(self, trial_id: int) -> int | None:
        with self._pool._lock:
            return self._executor.worker_key(trial_id)

    def end_leftover(self, trial_id: int, worker_key: int | None) -> None:
        self._executor.end_leftover(trial_id, worker_key)  # waits: not under the lock

    def device_kind(self) -> str | None:
        return self._executor.device_kind()

    def waiting(self, trial_id: int) -> bool:
        with self._pool._lock:
            return self._executor.waiting(trial_id)

    def describe_exit(self, trial_id: int, code: int) -> str:
        with self._pool._lock:
            return self._executor.describe_exit(trial_id, code)

    def close(self) -> None:
        """An experiment's own executor (SLURM) is closed; a shared one stays with the pool."""
        if self._own is not None:
            self._own.close()
