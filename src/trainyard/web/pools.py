"""The pools page: slots in use and queued per pool, usage per project, running trials per node.

The store says which trials run or wait and in which experiment (and so which pool and how
many slots each takes); only the Master's executors know a pool's size and where its workers
run. Whoever serves the dashboard passes a `PoolSource` for that: `trainyard run` reports its
one executor (a local pool runs every trial on this machine); a facility server can report
each pool it drives. Views take an optional project filter, so a server's sign-in can show a
user only their projects' experiments.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from trainyard.executors.base import Executor
from trainyard.master.service import MasterService
from trainyard.protocol import TrialState
from trainyard.store.dashboard_reads import (
    project_shares,
    running_trials,
    unfinished_experiments,
)

UNKNOWN_NODE = "(not reported by the executor)"


@dataclass(frozen=True)
class PoolSlots:
    """What an executor says about its pool now."""

    name: str
    executor: str
    """The backend's name (local, slurm, kubernetes)."""
    capacity: int
    free: int
    node: str | None = None
    """The machine every trial of this pool runs on (a local pool), else None."""


PoolSource = Callable[[], list[PoolSlots]]


@dataclass
class PoolRow:
    """One pool on the page."""

    name: str
    executor: str = ""
    capacity: int | None = None
    """None for a pool the Master has no executor for (experiments of another Master)."""
    free: int | None = None
    """Free slots as the executor counts them (None as for capacity)."""
    in_use: int = 0
    """Slots held by running trials, by the store."""
    queued: int = 0
    """Slots the queued trials of unfinished experiments are waiting for."""
    by_project: dict[str, int] = field(default_factory=dict)
    """Project -> slots its running trials hold."""
    entitled: dict[str, float] = field(default_factory=dict)
    """Project -> its fraction of the pool by share, among the projects with unfinished
    experiments there (what weighted fair share converges to while all of them wait)."""
    by_node: dict[str, list[str]] = field(default_factory=dict)
    """Node -> "experiment #trial" of each running trial there."""


def pools_view(
    service: MasterService,
    source: PoolSource | None,
    *,
    project_ids: Collection[int] | None = None,
    default_share: float = 1.0,
) -> list[PoolRow]:
    """Every pool the executors report, and every pool an unfinished experiment uses; the
    projects of `project_ids` only (None: all), each with its share of the pool among all the
    projects waiting there (their names are not shown)."""
    reported = {p.name: p for p in (source() if source else [])}
    rows = {
        name: PoolRow(name=name, executor=p.executor, capacity=p.capacity, free=p.free)
        for name, p in reported.items()
    }
    with service.store.session() as session:
        everyone = unfinished_experiments(session)
        experiments = unfinished_experiments(session, project_ids=project_ids)
        running = running_trials(session, experiment_ids=[e[0] for e in experiments])
        shares = project_shares(session)
    numbers_by_experiment: dict[int, list[int]] = defaultdict(list)
    for experiment_id, number in running:
        numbers_by_experiment[experiment_id].append(number)
    for experiment_id, name, project, counts in experiments:
        resources = service.experiment_config(experiment_id).resources
        row = rows.setdefault(resources.pool, PoolRow(name=resources.pool))
        slots = resources.slots_per_trial
        in_use = counts.get(TrialState.RUNNING, 0) * slots
        row.in_use += in_use
        row.queued += counts.get(TrialState.QUEUED, 0) * slots
        row.entitled.setdefault(project, 0.0)  # its fraction comes from _entitlements
        if in_use:
            row.by_project[project] = row.by_project.get(project, 0) + in_use
        pool = reported.get(resources.pool)
        node = pool.node if pool and pool.node else UNKNOWN_NODE
        for number in sorted(numbers_by_experiment[experiment_id]):
            row.by_node.setdefault(node, []).append(f"{name} #{number}")
    _entitlements(service, rows, everyone, shares, default_share)
    return sorted(rows.values(), key=lambda r: r.name)


def _entitlements(
    service: MasterService,
    rows: dict[str, PoolRow],
    everyone: list[tuple[int, str, str, dict[str, int]]],
    shares: dict[str, float | None],
    default_share: float,
) -> None:
    """Each shown project's fraction of its pools by share, among every waiting project."""
    contenders: dict[str, set[str]] = defaultdict(set)
    for experiment_id, _, project, _ in everyone:
        contenders[service.experiment_config(experiment_id).resources.pool].add(project)
    for pool, projects in contenders.items():
        row = rows.get(pool)
        if row is None:
            continue
        weights = {p: shares.get(p) or default_share for p in projects}
        total = sum(weights.values())
        row.entitled = {p: weights[p] / total for p in sorted(row.entitled)}


def local_pool(name: str, executor: Executor) -> PoolSource:
    """`trainyard run`'s one pool: its executor's slots; a local executor's trials all run on
    this machine."""
    node = socket.gethostname() if executor.name == "local" else None

    def report() -> list[PoolSlots]:
        return [
            PoolSlots(
                name=name,
                executor=executor.name,
                capacity=executor.capacity(),
                free=executor.free_slots(),
                node=node,
            )
        ]

    return report
