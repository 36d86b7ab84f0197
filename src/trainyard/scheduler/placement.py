"""One pool's placement on a server: projects' quotas and priorities around the fair share.

`place` is a pure function of demand, capacity, usage and configuration, in four steps:

1. Quotas cap demand first. Each experiment's demand (in slots, `slots_per_trial` a trial) is
   cut to the quotas that bind it, tightest scope first: the owner's trials and slots in the
   project (`user_max_concurrent_trials`, `user_max_slots`), then the project's trials
   (`max_concurrent_trials`). Inside one scope the quota is shared by weighted max-min, so one
   experiment cannot starve its neighbours of the quota. The project's `max_slots` is the cap
   of step 3. Capping demand rather than offers keeps the pool work-conserving: what a capped
   project cannot take goes to the others.
2. Priorities are strict tiers (as Slurm's partition PriorityTier and determined's priority
   scheduler): the highest tier's projects are served first, the next tier gets what is left.
3. Inside a tier, projects share by weight with decayed usage (`fair_offers`).
4. Each project's offer is split between its experiments by their weights (`split_offer`).

An experiment offered less than it wants because of a quota gets a reason naming the quota,
the current use and the limit, which the server shows as the experiment's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trainyard.scheduler.fair_share import (
    ExperimentDemand,
    ProjectDemand,
    fair_offers,
    split_offer,
    weighted_max_min,
)


@dataclass(frozen=True)
class ProjectPolicy:
    """A project's configuration and history on one pool."""

    name: str
    share: float = 1.0
    priority: int = 0
    """Higher tiers are served first."""
    usage: float = 0.0
    """Decayed slot-seconds on this pool."""
    max_slots: int | None = None
    max_concurrent_trials: int | None = None
    user_max_slots: int | None = None
    user_max_concurrent_trials: int | None = None


@dataclass(frozen=True)
class ExperimentWant:
    """What one experiment asks of the pool now, and what it holds."""

    experiment_id: int
    project: str
    demand: int
    """Slots it could use now (held ones included)."""
    slots_per_trial: int = 1
    owner: str | None = None
    weight: float = 1.0
    held: int = 0
    """Slots its running trials hold now (for the reasons' "current use")."""

    def __post_init__(self) -> None:
        if self.slots_per_trial < 1 or self.demand < 0 or self.held < 0:
            raise ValueError(
                f"experiment {self.experiment_id}: slots_per_trial must be >= 1, "
                "demand and held >= 0"
            )


@dataclass(frozen=True)
class Placement:
    offers: dict[int, int]
    """Experiment id -> slots it may hold (held ones included)."""
    waits: dict[int, str] = field(default_factory=dict)
    """Experiment id -> which quota holds it back, its current use and its limit."""


def place(
    capacity: int, projects: Sequence[ProjectPolicy], experiments: Sequence[ExperimentWant]
) -> Placement:
    """Slots per experiment out of `capacity`: never above capacity, an experiment's demand,
    or any quota; deterministic; within a tier, shares converge to the weights."""
    policies = {p.name: p for p in projects}
    unknown = sorted({e.project for e in experiments} - set(policies))
    if unknown:
        raise ValueError(f"experiments of projects without a policy: {unknown}")
    capped, waits = cap_by_quotas(policies, experiments)
    by_project: dict[str, list[ExperimentWant]] = {}
    for want in experiments:
        by_project.setdefault(want.project, []).append(want)
    project_offers: dict[str, int] = {}
    left = capacity
    for tier in sorted({policies[name].priority for name in by_project}, reverse=True):
        demands = [
            ProjectDemand(
                name=name,
                share=policies[name].share,
                demand=sum(capped[e.experiment_id] for e in wants),
                usage=policies[name].usage,
                max_slots=policies[name].max_slots,
            )
            for name, wants in sorted(by_project.items())
            if policies[name].priority == tier
        ]
        offers = fair_offers(demands, capacity=left)
        project_offers |= offers
        left -= sum(offers.values())
    result: dict[int, int] = {}
    for name, wants in by_project.items():
        split = [
            ExperimentDemand(e.experiment_id, capped[e.experiment_id], e.weight) for e in wants
        ]
        result |= split_offer(project_offers[name], split)
    for name, wants in by_project.items():
        limit = policies[name].max_slots
        if limit is not None and project_offers[name] >= limit:
            used = sum(e.held for e in wants)
            for want in wants:
                if result[want.experiment_id] < want.demand:
                    waits.setdefault(want.experiment_id, _reason(name, "max_slots", used, limit))
    return Placement(offers=result, waits=waits)


def cap_by_quotas(
    policies: dict[str, ProjectPolicy], experiments: Sequence[ExperimentWant]
) -> tuple[dict[int, int], dict[int, str]]:
    """Each experiment's demand (slots) cut to its owner's and its project's trial and slot
    quotas, and a reason for each one cut."""
    trials = {e.experiment_id: e.demand // e.slots_per_trial for e in experiments}
    waits: dict[int, str] = {}
    by_user: dict[tuple[str, str], list[ExperimentWant]] = {}
    by_project: dict[str, list[ExperimentWant]] = {}
    for want in experiments:
        if want.owner is not None:
            by_user.setdefault((want.project, want.owner), []).append(want)
        by_project.setdefault(want.project, []).append(want)
    for (project, owner), members in sorted(by_user.items()):
        limit = policies[project].user_max_concurrent_trials
        reason = _reason(project, "user_max_concurrent_trials", _running(members), limit, owner)
        _limit_scope(members, trials, limit, reason, waits)
    for project, members in sorted(by_project.items()):
        limit = policies[project].max_concurrent_trials
        reason = _reason(project, "max_concurrent_trials", _running(members), limit)
        _limit_scope(members, trials, limit, reason, waits)
    slots = {e.experiment_id: trials[e.experiment_id] * e.slots_per_trial for e in experiments}
    for (project, owner), members in sorted(by_user.items()):
        limit = policies[project].user_max_slots
        held = sum(e.held for e in members)
        reason = _reason(project, "user_max_slots", held, limit, owner)
        _limit_scope(members, slots, limit, reason, waits)
        for want in members:  # whole trials only
            slots[want.experiment_id] -= slots[want.experiment_id] % want.slots_per_trial
    return slots, waits


def _limit_scope(
    members: list[ExperimentWant],
    amounts: dict[int, int],
    limit: int | None,
    reason: str,
    waits: dict[int, str],
) -> None:
    """Cut the members' `amounts` (trials or slots) to `limit` in all, by weighted max-min."""
    if limit is None or sum(amounts[e.experiment_id] for e in members) <= limit:
        return
    weights = {e.experiment_id: e.weight for e in members}
    caps = {e.experiment_id: amounts[e.experiment_id] for e in members}
    for experiment_id, allowed in weighted_max_min(weights, caps, capacity=limit).items():
        if allowed < amounts[experiment_id]:
            waits.setdefault(experiment_id, reason)
        amounts[experiment_id] = allowed


def _running(members: list[ExperimentWant]) -> int:
    return sum(e.held // e.slots_per_trial for e in members)


def _reason(
    project: str, quota: str, used: int, limit: int | None, owner: str | None = None
) -> str:
    whose = f"{owner}'s experiments in project {project!r}" if owner else f"project {project!r}"
    unit = "slot" if quota.endswith("slots") else "trial"
    return (
        f"waiting for quota {quota}: {whose} may use {limit} {unit}(s) at once and use "
        f"{used} now; more start as these finish, or a facility admin raises it "
        f"(`trainyard admin project set {project} --{quota.replace('_', '-')} N`)"
    )
