"""A learning curve kept at most MAX_POINTS long as its reports arrive, without keeping them.

The dashboard draws every trial's validation curve; a search of 1,000 trials with 200
validations each is 200,000 reports per metric, too many to read for a page view. So the
Master folds each validation into a stored, thinned curve per trial and metric as it arrives
(`store.curves`), and a page reads one short row per trial.

The thinning is even in report order: of the curve's `count` points (by step) it keeps those
whose index is a multiple of `stride`, and the newest point; when more than MAX_POINTS - 1
would be kept, `stride` doubles and every other kept point goes. So a long curve has between
MAX_POINTS / 2 and MAX_POINTS points, evenly spread, its first and newest always among them.
The best value (highest and lowest, with their steps) is taken over every point, not only the
kept ones. Non-finite values (a diverged trial) are not points of the curve.

A point at a step that is not after the newest one (a resumed trial validating a step again,
whose newest value wins) cannot be folded in: `add` says so, and the caller builds the curve
again from every report with `from_points`, which gives what folding them in step order does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

MAX_POINTS = 200
"""Points of a curve sent to the browser, the newest included."""

T = TypeVar("T")


@dataclass
class ThinnedCurve:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    """The kept points by step, then the newest point when its index is not kept; values to
    six significant digits (what a chart can show, in a third of the bytes)."""
    stride: int = 1
    count: int = 0
    """Finite points folded in."""
    max_value: float | None = None
    max_step: int | None = None
    min_value: float | None = None
    min_step: int | None = None
    """The highest and lowest values (the first step reaching each) over every point."""

    @classmethod
    def from_points(cls, points: Iterable[tuple[int, float]]) -> ThinnedCurve:
        """The curve of these (step, value) reports, in the order they arrived: a step's
        newest value wins, and the points are folded in step order."""
        newest: dict[int, float] = {}
        for step, value in points:
            newest[step] = value
        curve = cls()
        for step in sorted(newest):
            curve.add(step, newest[step])
        return curve

    def add(self, step: int, value: float) -> bool:
        """Fold in a report at `step`; False (and nothing changed) when `step` is not after
        the newest point, which only `from_points` over every report can place."""
        if self.steps and step <= self.steps[-1]:
            return False
        if not math.isfinite(value):
            return True
        self._note_best(step, value)
        if len(self.steps) > self._kept_count():
            self.steps.pop()
            self.values.pop()
        index = self.count
        self.count += 1
        shown = float(f"{value:.6g}")
        self.steps.append(step)
        self.values.append(shown)
        if index % self.stride == 0 and len(self.steps) > MAX_POINTS - 1:
            self.steps, self.values = self.steps[::2], self.values[::2]
            self.stride *= 2
            if index % self.stride != 0:
                self.steps.append(step)
                self.values.append(shown)
        return True

    def best(self, mode: str) -> tuple[float, int] | tuple[None, None]:
        """The best value and its step: the highest for mode "max", else the lowest."""
        if mode == "max":
            return (self.max_value, self.max_step) if self.max_step is not None else (None, None)
        return (self.min_value, self.min_step) if self.min_step is not None else (None, None)

    def steps_json(self) -> str:
        return json.dumps(self.steps)

    def values_json(self) -> str:
        return json.dumps(self.values)

    def _kept_count(self) -> int:
        return (self.count - 1) // self.stride + 1 if self.count else 0

    def _note_best(self, step: int, value: float) -> None:
        if self.max_value is None or value > self.max_value:
            self.max_value, self.max_step = value, step
        if self.min_value is None or value < self.min_value:
            self.min_value, self.min_step = value, step


def thin(points: list[T]) -> list[T]:
    """At most MAX_POINTS of a list read whole, evenly spread, the first and last kept."""
    if len(points) <= MAX_POINTS:
        return points
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS)]
