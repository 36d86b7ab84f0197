"""A pool's placement with quotas and priorities, as properties: never above capacity, demand or
any quota (project and user, slots and trials); higher priority tiers first; deterministic; and
the reasons name the quota, its current use and its limit. Preemption picks the fewest trials
that ran long enough, never cutting an experiment below its offer."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainyard.scheduler.placement import ExperimentWant, ProjectPolicy, place
from trainyard.scheduler.preemption import RunningTrial, preemptions

NAMES = ("a", "b", "c", "d")
limit = st.none() | st.integers(0, 24)
policy = st.builds(
    ProjectPolicy,
    name=st.sampled_from(NAMES),
    share=st.floats(0.1, 10),
    priority=st.integers(0, 2),
    usage=st.floats(0, 1e5),
    max_slots=limit,
    max_concurrent_trials=limit,
    user_max_slots=limit,
    user_max_concurrent_trials=limit,
)


@st.composite
def pools(draw: st.DrawFn) -> tuple[int, list[ProjectPolicy], list[ExperimentWant]]:
    projects = draw(st.lists(policy, min_size=1, max_size=4, unique_by=lambda p: p.name))
    experiments = []
    for experiment_id in range(1, draw(st.integers(0, 8)) + 1):
        spt = draw(st.integers(1, 4))
        experiments.append(
            ExperimentWant(
                experiment_id=experiment_id,
                project=draw(st.sampled_from([p.name for p in projects])),
                demand=spt * draw(st.integers(0, 8)),
                slots_per_trial=spt,
                owner=draw(st.sampled_from(["ann", "bob", None])),
                weight=draw(st.floats(0.5, 4)),
            )
        )
    return draw(st.integers(0, 48)), projects, experiments


@given(pools())
def test_never_above_capacity_demand_or_any_quota(pool) -> None:
    capacity, projects, experiments = pool
    offers = place(capacity, projects, experiments).offers
    assert sum(offers.values()) <= capacity
    policies = {p.name: p for p in projects}
    slots: dict[object, int] = defaultdict(int)
    trials: dict[object, int] = defaultdict(int)
    for want in experiments:
        offer = offers[want.experiment_id]
        assert 0 <= offer <= want.demand
        keys = [want.project] + ([(want.project, want.owner)] if want.owner else [])
        for key in keys:
            slots[key] += offer
            trials[key] += offer // want.slots_per_trial
    for name, p in policies.items():
        assert p.max_slots is None or slots[name] <= p.max_slots
        assert p.max_concurrent_trials is None or trials[name] <= p.max_concurrent_trials
        for owner in ("ann", "bob"):
            assert p.user_max_slots is None or slots[(name, owner)] <= p.user_max_slots
            assert (
                p.user_max_concurrent_trials is None
                or trials[(name, owner)] <= p.user_max_concurrent_trials
            )


@given(pools())
def test_a_lower_tier_gets_slots_only_when_every_higher_one_is_satisfied(pool) -> None:
    capacity, projects, experiments = pool
    placement = place(capacity, projects, experiments)
    policies = {p.name: p for p in projects}
    got: dict[str, int] = defaultdict(int)
    for want in experiments:
        got[want.project] += placement.offers[want.experiment_id]
    # What each project could take at most (its capped demand) is what it gets alone.
    alone = {
        name: sum(
            place(
                10**6, [policies[name]], [e for e in experiments if e.project == name]
            ).offers.values()
        )
        for name in policies
    }
    for low in policies.values():
        if got[low.name] == 0:
            continue
        for high in policies.values():
            if high.priority > low.priority:
                assert got[high.name] == alone[high.name], (high, low, got)


@settings(max_examples=50)
@given(pools(), st.randoms(use_true_random=False))
def test_the_same_inputs_in_any_order_place_the_same(pool, random) -> None:
    capacity, projects, experiments = pool
    first = place(capacity, projects, experiments)
    random.shuffle(projects)
    random.shuffle(experiments)
    assert place(capacity, projects, experiments) == first


def test_a_project_trial_quota_holds_its_experiments_back_with_a_reason() -> None:
    alpha = ProjectPolicy("alpha", max_concurrent_trials=3)
    wants = [
        ExperimentWant(1, "alpha", demand=4, held=2),
        ExperimentWant(2, "alpha", demand=4, held=1),
        ExperimentWant(3, "beta", demand=4),
    ]
    placement = place(16, [alpha, ProjectPolicy("beta")], wants)
    assert placement.offers == {1: 2, 2: 1, 3: 4}  # 3 trials shared by max-min, beta unhurt
    assert placement.waits[1] == (
        "waiting for quota max_concurrent_trials: project 'alpha' may use 3 trial(s) at once "
        "and use 3 now; more start as these finish, or a facility admin raises it "
        "(`trainyard admin project set alpha --max-concurrent-trials N`)"
    )
    assert 3 not in placement.waits


def test_a_users_slot_quota_counts_whole_trials_and_names_the_user() -> None:
    alpha = ProjectPolicy("alpha", user_max_slots=5)
    wants = [
        ExperimentWant(1, "alpha", demand=8, slots_per_trial=2, owner="ann", held=4),
        ExperimentWant(2, "alpha", demand=8, slots_per_trial=2, owner="bob"),
    ]
    placement = place(16, [alpha], wants)
    assert placement.offers == {1: 4, 2: 4}  # 5 slots hold two 2-slot trials each
    assert "ann's experiments in project 'alpha' may use 5 slot(s) at once" in placement.waits[1]
    assert "and use 4 now" in placement.waits[1]


def test_a_project_slot_quota_is_reported_when_it_binds() -> None:
    placement = place(16, [ProjectPolicy("alpha", max_slots=2)], [ExperimentWant(1, "alpha", 6)])
    assert placement.offers == {1: 2}
    assert "quota max_slots: project 'alpha' may use 2 slot(s)" in placement.waits[1]


def test_priority_serves_the_higher_tier_first_then_shares_by_weight() -> None:
    projects = [
        ProjectPolicy("urgent", priority=1),
        ProjectPolicy("big", share=3),
        ProjectPolicy("small", share=1),
    ]
    wants = [
        ExperimentWant(1, "urgent", 4),
        ExperimentWant(2, "big", 12),
        ExperimentWant(3, "small", 12),
    ]
    assert place(12, projects, wants).offers == {1: 4, 2: 6, 3: 2}


def test_experiments_of_a_project_without_a_policy_are_refused() -> None:
    with pytest.raises(ValueError, match=r"without a policy: \['x'\]"):
        place(4, [], [ExperimentWant(1, "x", 1)])


def test_preemption_frees_the_shortfall_from_the_furthest_over_offer() -> None:
    running = [
        RunningTrial(10, experiment_id=1, slots=1, run_s=600),
        RunningTrial(11, experiment_id=1, slots=1, run_s=30),  # too young
        RunningTrial(12, experiment_id=1, slots=1, run_s=900),
        RunningTrial(13, experiment_id=1, slots=1, run_s=1200),
    ]
    chosen = preemptions(
        offers={1: 2, 2: 2}, held={1: 4, 2: 0}, running=running, free=0, min_run_s=60
    )
    assert chosen == [10, 12]  # the youngest old-enough trials; 2 slots for experiment 2
    assert (
        preemptions(offers={1: 2, 2: 2}, held={1: 4}, running=running, free=2, min_run_s=60) == []
    )


@given(
    st.lists(
        st.builds(
            RunningTrial,
            trial_id=st.integers(1, 10**6),
            experiment_id=st.integers(1, 4),
            slots=st.integers(1, 3),
            run_s=st.floats(0, 1000),
        ),
        unique_by=lambda t: t.trial_id,
        max_size=12,
    ),
    st.dictionaries(st.integers(1, 6), st.integers(0, 12)),
    st.integers(0, 4),
)
def test_preemption_never_cuts_below_an_offer_nor_takes_a_young_trial(running, offers, free):
    held: dict[int, int] = defaultdict(int)
    for trial in running:
        held[trial.experiment_id] += trial.slots
    chosen = preemptions(offers=offers, held=held, running=running, free=free, min_run_s=100)
    by_id = {t.trial_id: t for t in running}
    freed: dict[int, int] = defaultdict(int)
    for trial_id in chosen:
        assert by_id[trial_id].run_s >= 100
        freed[by_id[trial_id].experiment_id] += by_id[trial_id].slots
    for experiment_id, slots in freed.items():
        assert held[experiment_id] - slots >= offers.get(experiment_id, 0)
