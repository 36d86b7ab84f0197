"""The thinned curve a validation metric is folded into: at most MAX_POINTS points, evenly
spread in report order, the first and newest kept, the best over every point, and the same
whether folded one report at a time or built from all of them."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from trainyard.store.curve_thinning import MAX_POINTS, ThinnedCurve, thin

values = st.floats(allow_nan=True, allow_infinity=True, width=32)
gaps = st.integers(min_value=1, max_value=50)


@given(st.lists(st.tuples(gaps, values), max_size=3 * MAX_POINTS))
def test_folding_in_step_order_keeps_an_even_short_curve_with_the_exact_best(
    reports: list[tuple[int, float]],
) -> None:
    step, points = 0, []
    for gap, value in reports:
        step += gap
        points.append((step, value))
    curve = ThinnedCurve()
    for point in points:
        assert curve.add(*point)
    finite = [(s, v) for s, v in points if math.isfinite(v)]
    assert curve.count == len(finite)
    assert len(curve.steps) == len(curve.values) <= MAX_POINTS
    if not finite:
        assert curve.steps == [] and curve.best("max") == (None, None)
        return
    assert curve.steps[0] == finite[0][0] and curve.steps[-1] == finite[-1][0]
    if len(finite) >= MAX_POINTS:
        assert len(curve.steps) >= MAX_POINTS // 2
    index = {s: i for i, (s, _) in enumerate(finite)}
    kept = [index[s] for s in curve.steps]
    body = kept if (len(finite) - 1) % curve.stride == 0 else kept[:-1]
    assert body == list(range(0, len(finite), curve.stride))
    assert curve.values == [float(f"{v:.6g}") for s, v in finite if s in set(curve.steps)]
    high = max(finite, key=lambda point: point[1])
    low = min(finite, key=lambda point: point[1])
    assert curve.best("max") == (high[1], high[0])
    assert curve.best("min") == (low[1], low[0])
    assert curve == ThinnedCurve.from_points(points)


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=40), values), max_size=120))
def test_a_step_validated_again_is_refused_and_from_points_lets_its_newest_value_win(
    reports: list[tuple[int, float]],
) -> None:
    curve = ThinnedCurve.from_points(reports)
    newest = dict(reports)
    finite = sorted((s, v) for s, v in newest.items() if math.isfinite(v))
    shown = [(s, float(f"{v:.6g}")) for s, v in finite]
    assert list(zip(curve.steps, curve.values, strict=True)) == shown[: len(curve.steps)]
    if curve.steps:
        assert curve.add(curve.steps[-1], 1.0) is False
        assert curve.add(curve.steps[0] - 1, 1.0) is False
        assert curve == ThinnedCurve.from_points(reports)


def test_the_page_json_has_six_significant_digits() -> None:
    curve = ThinnedCurve.from_points([(10, 0.123456789), (20, float("nan")), (30, 2.0)])
    assert curve.steps_json() == "[10, 30]"
    assert json.loads(curve.values_json()) == [0.123457, 2.0]


def test_a_list_read_whole_is_thinned_to_max_points_with_its_ends() -> None:
    points = list(range(1000))
    thinned = thin(points)
    assert len(thinned) == MAX_POINTS and thinned[0] == 0 and thinned[-1] == 999
    assert thin(points[:MAX_POINTS]) == points[:MAX_POINTS]
