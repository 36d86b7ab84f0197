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
allocation is rounded to whole slots by largest remainder, ties broken by the project's name,
so the result is deterministic and never exceeds capacity, demand or quota.

The split between a project's experiments and the choice of trials inside an offer are the
caller's (an offer is in slots; a trial needing more slots than its project's offer waits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    if capacity < 0:
        raise ValueError("capacity must be >= 0")
    weights = effective_weights(projects)
    caps = {p.name: p.cap for p in projects}
    shares = _water_fill(weights, caps, float(min(capacity, sum(caps.values()))))
    return _round(shares, caps, min(capacity, sum(caps.values())))


def _water_fill(
    weights: dict[str, float], caps: dict[str, int], capacity: float
) -> dict[str, float]:
    """Continuous weighted max-min fair allocation of ``capacity`` (which fits the caps)."""
    allocation = {name: 0.0 for name in caps}
    active = {name for name, cap in caps.items() if cap > 0}
    left = capacity
    while active and left > 1e-9:
        total_weight = sum(weights[name] for name in active)
        # The level at which the first active project reaches its cap, per unit of weight.
        step = min((caps[n] - allocation[n]) / weights[n] for n in active)
        rise = min(step, left / total_weight)
        for name in active:
            allocation[name] += rise * weights[name]
        left -= rise * total_weight
        active = {n for n in active if caps[n] - allocation[n] > 1e-9}
    return allocation


def _round(shares: dict[str, float], caps: dict[str, int], total: int) -> dict[str, int]:
    """Whole slots summing to ``total``: floors first, then the largest remainders (name
    order among equals), never above a cap."""
    offers = {name: min(caps[name], math.floor(share + 1e-9)) for name, share in shares.items()}
    missing = total - sum(offers.values())
    by_remainder = sorted(shares, key=lambda n: (-(shares[n] - offers[n]), n))
    for name in by_remainder:
        if missing <= 0:
            break
        if offers[name] < caps[name]:
            offers[name] += 1
            missing -= 1
    return offers
