"""Fair share of one pool's slots between projects: a pure function of demand, capacity,
usage and configuration.

Each project has a configured share (its weight). Past use lowers its weight now, as Slurm's
classic fair-share factor does: the effective weight is ``share * 2 ** (-usage / entitlement)``,
where ``usage`` is the project's fraction of the pool's decayed slot-seconds and
``entitlement`` its fraction of the shares. A project that used exactly its share keeps half its
weight, one that used nothing keeps all of it, so over time the slots each project gets
converge to the configured shares. Usage decays with a half-life (``decay_usage``), so last
month's burst does not block this week's work.

The slots are then handed out by weighted max-min fair filling (water-filling): every project
with demand left rises at a rate proportional to its effective weight until it reaches its
demand or its quota; what a capped project cannot take goes to the others. The continuous
allocation is rounded to whole slots: each project gets the whole slots of its part, and the
slots left over go first to the projects furthest behind their share (lowest decayed usage per
unit of share, as Slurm's fair-share factor orders jobs), then by the larger remainder, then by
name. On a pool with fewer slots than projects most slots are such leftovers; handing them out
by remainder alone gave the same largest shares every slot, every tick, and starved the rest
(a share-1 project next to a share-3 one on a 1-slot pool never ran). Ordered by usage, each
project's slot-seconds converge to its share on any pool size. The result is deterministic and
never exceeds capacity, demand or quota.

A project's offer is split between its experiments the same way (``split_offer``), by their
weights and max_slots, as determined does; which trials start inside an experiment's offer is
the caller's choice (an offer is in slots; a trial needing more than what is left waits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", str, int)
"""A project name or an experiment id."""

MIN_RELATIVE_WEIGHT = 1e-9
"""The smallest effective weight, relative to the largest."""


@dataclass(frozen=True)
class ProjectDemand:
    """What one project asks of a pool now, and what entitles it."""

    name: str
    share: float
    """Configured weight, > 0: two projects with shares 3 and 1 get 3:1 of a contended pool."""
    demand: int
    """Slots its queued and running trials would use now."""
    usage: float = 0.0
    """Decayed slot-seconds this project used on this pool (see ``decay_usage``)."""
    max_slots: int | None = None
    """Quota: the most slots it may hold at once in this pool; None for no quota."""

    def __post_init__(self) -> None:
        if not self.share > 0 or math.isinf(self.share):
            raise ValueError(f"project {self.name!r}: share must be a positive number")
        quota = 0 if self.max_slots is None else self.max_slots
        if self.demand < 0 or self.usage < 0 or quota < 0:
            raise ValueError(f"project {self.name!r}: demand, usage and max_slots must be >= 0")

    @property
    def cap(self) -> int:
        """The most this project can be offered: its demand, within its quota."""
        return self.demand if self.max_slots is None else min(self.demand, self.max_slots)


def decay_usage(usage: float, *, elapsed_s: float, half_life_s: float, used: float) -> float:
    """Usage after ``elapsed_s`` seconds in which ``used`` slot-seconds were added: the old
    value halves every ``half_life_s`` seconds (Slurm's PriorityDecayHalfLife)."""
    if half_life_s <= 0:
        raise ValueError("half_life_s must be > 0")
    return usage * 0.5 ** (max(elapsed_s, 0.0) / half_life_s) + used


def effective_weights(projects: Sequence[ProjectDemand]) -> dict[str, float]:
    """Each project's share lowered by its past use, ``share * 2 ** (-usage / entitlement)``,
    scaled so the largest is 1; none falls below ``MIN_RELATIVE_WEIGHT`` (a project that used
    the pool for ages still gets what nobody else wants, and the filling stays finite)."""
    total_share = sum(p.share for p in projects)
    total_usage = sum(p.usage for p in projects)
    log_weights = {}
    for project in projects:
        used_fraction = project.usage / total_usage if total_usage > 0 else 0.0
        entitled_fraction = project.share / total_share
        log_weights[project.name] = math.log(
            project.share
        ) - used_fraction / entitled_fraction * math.log(2.0)
    top = max(log_weights.values(), default=0.0)
    return {
        name: max(math.exp(value - top), MIN_RELATIVE_WEIGHT)
        for name, value in log_weights.items()
    }


def fair_offers(projects: Sequence[ProjectDemand], *, capacity: int) -> dict[str, int]:
    """Slots offered to each project (by name) out of ``capacity``.

    Never more than ``capacity`` in all, nor more than a project's demand or quota; no slot is
    left idle while a project could take it; weighted max-min fair up to one slot of rounding;
    the same inputs give the same offers.
    """
    names = [p.name for p in projects]
    if len(set(names)) != len(names):
        raise ValueError(f"project names must be unique, got {sorted(names)}")
    caps = {p.name: p.cap for p in projects}
    behind = {p.name: p.usage / p.share for p in projects}
    return weighted_max_min(effective_weights(projects), caps, capacity=capacity, first=behind)


@dataclass(frozen=True)
class ExperimentDemand:
    """What one experiment of a project asks for (determined's per-experiment weight and
    max_slots)."""

    experiment_id: int
    demand: int
    weight: float = 1.0
    max_slots: int | None = None

    def __post_init__(self) -> None:
        if not self.weight > 0 or math.isinf(self.weight):
            raise ValueError(f"experiment {self.experiment_id}: weight must be a positive number")
        if self.demand < 0 or (self.max_slots is not None and self.max_slots < 0):
            raise ValueError(f"experiment {self.experiment_id}: demand and max_slots must be >= 0")

    @property
    def cap(self) -> int:
        return self.demand if self.max_slots is None else min(self.demand, self.max_slots)


def split_offer(offer: int, experiments: Sequence[ExperimentDemand]) -> dict[int, int]:
    """A project's offer split between its experiments by weighted max-min, as between
    projects but without usage: an experiment is a job, not an account."""
    ids = [e.experiment_id for e in experiments]
    if len(set(ids)) != len(ids):
        raise ValueError(f"experiment ids must be unique, got {sorted(ids)}")
    weights = {e.experiment_id: e.weight for e in experiments}
    caps = {e.experiment_id: e.cap for e in experiments}
    return weighted_max_min(weights, caps, capacity=offer)


def weighted_max_min(
    weights: Mapping[K, float],
    caps: Mapping[K, int],
    *,
    capacity: int,
    first: Mapping[K, float] | None = None,
) -> dict[K, int]:
    """Whole slots per key: continuous weighted max-min filling, then rounding: the slots left
    after each key's whole part go by ascending `first` (when given), then by largest
    remainder. Keys are visited in sorted order, so the result does not depend on the order
    of the inputs or on hashing."""
    if capacity < 0:
        raise ValueError("capacity must be >= 0")
    keys = sorted(caps)
    total = min(capacity, sum(caps.values()))
    shares = _water_fill(keys, weights, caps, float(total))
    return _round(keys, shares, caps, total, first or dict.fromkeys(keys, 0.0))


def _water_fill(
    keys: list[K], weights: Mapping[K, float], caps: Mapping[K, int], capacity: float
) -> dict[K, float]:
    """Continuous weighted max-min fair allocation of ``capacity`` (which fits the caps)."""
    allocation = dict.fromkeys(keys, 0.0)
    active = [k for k in keys if caps[k] > 0]
    left = capacity
    while active and left > 1e-9:
        total_weight = sum(weights[k] for k in active)
        # The level at which the first active key reaches its cap, per unit of weight.
        step = min((caps[k] - allocation[k]) / weights[k] for k in active)
        rise = min(step, left / total_weight)
        for k in active:
            allocation[k] += rise * weights[k]
        left -= rise * total_weight
        active = [k for k in active if caps[k] - allocation[k] > 1e-9]
    return allocation


def _round(
    keys: list[K],
    shares: Mapping[K, float],
    caps: Mapping[K, int],
    total: int,
    first: Mapping[K, float],
) -> dict[K, int]:
    """Whole slots summing to ``total``: floors first, then one more each by ascending
    `first`, then the largest remainders (key order among equals), never above a cap."""
    offers = {k: min(caps[k], math.floor(shares[k] + 1e-9)) for k in keys}
    missing = total - sum(offers.values())
    order = sorted(keys, key=lambda k: (first[k], -(shares[k] - offers[k])))  # stable
    for k in order:
        if missing <= 0:
            break
        if offers[k] < caps[k]:
            offers[k] += 1
            missing -= 1
    return offers
