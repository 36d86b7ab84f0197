"""Fair share between projects as properties: never above capacity, demand or quota; no idle
slot while someone could take it; weighted max-min fair up to rounding; deterministic; and over
time each project's slot-seconds converge to its configured share."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainyard.scheduler.fair_share import (
    ExperimentDemand,
    ProjectDemand,
    decay_usage,
    effective_weights,
    fair_offers,
    split_offer,
)

project = st.builds(
    ProjectDemand,
    name=st.text("abcdefgh", min_size=1, max_size=4),
    share=st.floats(0.1, 100),
    demand=st.integers(0, 64),
    usage=st.floats(0, 1e6),
    max_slots=st.none() | st.integers(0, 64),
)
projects = st.lists(project, max_size=8, unique_by=lambda p: p.name)


@given(projects, st.integers(0, 128))
def test_offers_stay_within_capacity_demand_and_quota(pool: list[ProjectDemand], capacity: int):
    offers = fair_offers(pool, capacity=capacity)
    assert sum(offers.values()) <= capacity
    for p in pool:
        assert 0 <= offers[p.name] <= p.demand
        assert p.max_slots is None or offers[p.name] <= p.max_slots


@given(projects, st.integers(0, 128))
def test_no_slot_idles_while_a_project_could_take_it(pool: list[ProjectDemand], capacity: int):
    offers = fair_offers(pool, capacity=capacity)
    if sum(offers.values()) < capacity:
        assert all(offers[p.name] == p.cap for p in pool)


@given(projects, st.integers(0, 128))
def test_offers_are_weighted_max_min_fair_up_to_one_slot(pool: list[ProjectDemand], capacity: int):
    """No slot could move from j to a project i below its cap and make the allocation fairer:
    i's level plus one slot is at least j's level minus one slot."""
    offers = fair_offers(pool, capacity=capacity)
    weights = effective_weights(pool)
    for i in pool:
        if offers[i.name] >= i.cap:
            continue
        for j in pool:
            level_i = (offers[i.name] + 1) / weights[i.name]
            level_j = (offers[j.name] - 1) / weights[j.name]
            assert level_i >= level_j - 1e-9, (i.name, j.name, offers)


@settings(max_examples=50)
@given(projects, st.integers(0, 128), st.randoms())
def test_the_same_inputs_in_any_order_give_the_same_offers(pool, capacity, random):
    shuffled = list(pool)
    random.shuffle(shuffled)
    assert fair_offers(shuffled, capacity=capacity) == fair_offers(pool, capacity=capacity)


def test_contended_slots_follow_the_weights_not_the_demands() -> None:
    """determined's documented case (8 slots, demands 10 and 30) under our rule: equal weights
    give 4 and 4, weights 3:1 give 6 and 2. determined itself gives 2 and 6, then 4 and 4: it
    shares in proportion to demand times weight, so a bigger queue earns more slots; here a
    project's share does not grow with the size of its queue."""
    equal = [ProjectDemand("a", 1, 10), ProjectDemand("b", 1, 30)]
    assert fair_offers(equal, capacity=8) == {"a": 4, "b": 4}
    weighted = [ProjectDemand("a", 3, 10), ProjectDemand("b", 1, 30)]
    assert fair_offers(weighted, capacity=8) == {"a": 6, "b": 2}


def test_a_capped_project_leaves_its_slots_to_the_others() -> None:
    pool = [ProjectDemand("a", 1, 2), ProjectDemand("b", 1, 30, max_slots=3)]
    assert fair_offers([*pool, ProjectDemand("c", 1, 30)], capacity=16) == {
        "a": 2,
        "b": 3,
        "c": 11,
    }


def test_past_use_lowers_a_project_below_an_idle_one() -> None:
    busy = ProjectDemand("busy", 1, 100, usage=1000.0)
    idle = ProjectDemand("idle", 1, 100, usage=0.0)
    offers = fair_offers([busy, idle], capacity=10)
    assert offers["idle"] > offers["busy"]


@pytest.mark.parametrize(
    ("shares", "capacity"),
    [
        ((1, 1), 12),
        ((3, 1), 12),
        ((5, 3, 2), 12),
        ((3, 1), 1),  # one GPU server: the share-1 project used to never run
        ((1, 1, 2, 2, 3, 3), 2),  # the facility benchmark's projects on a 2-slot pool
        ((1, 1, 2, 2, 3, 3), 8),
    ],
)
def test_slot_seconds_converge_to_the_configured_shares(
    shares: tuple[int, ...], capacity: int
) -> None:
    """Every project always wants the whole pool; after many scheduling rounds with decayed
    usage, each project's total slot-seconds are within 5% of its share of the pool, also on
    pools with fewer slots than projects, where most slots are handed out by the rounding."""
    round_s, half_life_s = 60.0, 3600.0
    names = [f"p{i}" for i in range(len(shares))]
    usage = dict.fromkeys(names, 0.0)
    total = dict.fromkeys(names, 0.0)
    for _ in range(2000):
        demands = [
            ProjectDemand(n, s, capacity, usage=usage[n])
            for n, s in zip(names, shares, strict=True)
        ]
        offers = fair_offers(demands, capacity=capacity)
        for n in names:
            used = offers[n] * round_s
            usage[n] = decay_usage(usage[n], elapsed_s=round_s, half_life_s=half_life_s, used=used)
            total[n] += used
    grand_total = sum(total.values())
    for n, s in zip(names, shares, strict=True):
        assert total[n] / grand_total == pytest.approx(s / sum(shares), rel=0.05)


def test_a_slot_left_by_rounding_goes_to_the_project_furthest_behind_its_share() -> None:
    """One slot, shares 3 and 1: once the share-3 project used more per unit of share, the
    slot goes to the share-1 one, though its weight (and remainder) is still the smaller."""
    big = ProjectDemand("big", 3, 5, usage=300.0)
    small = ProjectDemand("small", 1, 5, usage=0.0)
    weights = effective_weights([big, small])
    assert weights["big"] > weights["small"]
    assert fair_offers([big, small], capacity=1) == {"big": 0, "small": 1}
    assert fair_offers([big, ProjectDemand("small", 1, 5, usage=101.0)], capacity=1) == {
        "big": 1,
        "small": 0,
    }


def test_usage_halves_every_half_life() -> None:
    assert decay_usage(100.0, elapsed_s=3600, half_life_s=3600, used=0) == pytest.approx(50.0)
    assert decay_usage(100.0, elapsed_s=7200, half_life_s=3600, used=5) == pytest.approx(30.0)


def test_bad_configuration_is_refused_with_the_project_named() -> None:
    with pytest.raises(ValueError, match="project 'x': share must be a positive number"):
        ProjectDemand("x", 0, 1)
    with pytest.raises(ValueError, match="project names must be unique"):
        fair_offers([ProjectDemand("x", 1, 1), ProjectDemand("x", 2, 1)], capacity=1)


experiment = st.builds(
    ExperimentDemand,
    experiment_id=st.integers(1, 50),
    demand=st.integers(0, 32),
    weight=st.floats(0.1, 10),
    max_slots=st.none() | st.integers(0, 32),
)
experiments = st.lists(experiment, max_size=8, unique_by=lambda e: e.experiment_id)


@given(experiments, st.integers(0, 64))
def test_a_project_offer_is_split_within_caps_and_leaves_nothing_idle(
    jobs: list[ExperimentDemand], offer: int
):
    split = split_offer(offer, jobs)
    assert sum(split.values()) <= offer
    assert all(0 <= split[e.experiment_id] <= e.cap for e in jobs)
    if sum(split.values()) < offer:
        assert all(split[e.experiment_id] == e.cap for e in jobs)
    for i in jobs:
        if split[i.experiment_id] < i.cap:
            for j in jobs:
                level_i = (split[i.experiment_id] + 1) / i.weight
                assert level_i >= (split[j.experiment_id] - 1) / j.weight - 1e-9


def test_experiment_weights_and_max_slots_split_an_offer() -> None:
    """8 slots, demands 10 and 30: equal weights give 4 and 4, weights 3:1 give 6 and 2, and
    max_slots caps one and hands the rest to the other."""
    assert split_offer(8, [ExperimentDemand(1, 10), ExperimentDemand(2, 30)]) == {1: 4, 2: 4}
    weighted = [ExperimentDemand(1, 10, weight=3), ExperimentDemand(2, 30)]
    assert split_offer(8, weighted) == {1: 6, 2: 2}
    capped = [ExperimentDemand(1, 10, max_slots=1), ExperimentDemand(2, 30)]
    assert split_offer(8, capped) == {1: 1, 2: 7}
