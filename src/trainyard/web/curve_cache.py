"""Learning curves of an experiment kept in memory, refreshed from the newest reports only.

A search of 1,000 trials with 200 validations each holds 200,000 values per metric; reading
and thinning them all for every page view (and every live refresh) took seconds. The cache
keeps, per (experiment, metric), every trial's points and its page-ready curve, and on each
read asks the store only for reports with an id above the newest it has seen, rebuilding the
curves of the trials that changed. Reports are only ever added (a validation resent at the
same step is not stored twice), so that is all that can change; a report whose id is below one
already seen but that commits later (PostgreSQL hands out ids before commit) is caught by
re-reading the last LOOKBACK reports each time, and an entry is rebuilt in full after
REBUILD_AFTER_S in case even that missed one.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TypeVar

from trainyard.master.service import MasterService
from trainyard.protocol import MetricKind
from trainyard.store.dashboard_reads import (
    experiment_metric_series,
    metric_names_since,
    metric_series_since,
    newest_metric_id,
    trials_of_experiment,
)

T = TypeVar("T")

MAX_POINTS_PER_CURVE = 200
"""Points per trial and metric sent to the browser; longer curves are thinned evenly."""
LOOKBACK = 1024
"""Reports below the newest seen id that are read again (at most every LOOKBACK_EVERY_S)."""
LOOKBACK_EVERY_S = 10.0
REBUILD_AFTER_S = 300.0
MAX_ENTRIES = 16
"""(experiment, metric) pairs kept; the least recently used goes first."""


@dataclass
class TrialCurve:
    """One trial's curve of one metric: every point, its best value, its page-ready JSON."""

    points: dict[int, float] = field(default_factory=dict)
    """step -> value (the newest report at a step wins)."""
    best: float | None = None
    best_step: int | None = None
    steps_json: str = "[]"
    values_json: str = "[]"


@dataclass
class _Entry:
    mode: str
    seen_id: int | None = None
    """The newest report id read; None before the first (full) read."""
    built_at: float = field(default_factory=time.monotonic)
    looked_back_at: float = 0.0
    trials: dict[int, TrialCurve] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    others: set[int] = field(default_factory=set)
    """Trial ids met in new reports that belong to other experiments."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class CurveCache:
    """The validation curves of the experiments the dashboard shows, by (experiment, metric),
    and the names of the metrics they report."""

    def __init__(self, service: MasterService) -> None:
        self._service = service
        self._entries: OrderedDict[tuple[int, str | None], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def curves(
        self, experiment_id: int, metric: str, mode: str, trial_ids: Collection[int]
    ) -> dict[int, TrialCurve]:
        """Trial id -> its curve of validation `metric`, current as of this call; `mode` (max
        or min) decides each trial's best value, `trial_ids` are the experiment's trials."""
        entry = self._entry((experiment_id, metric), mode)
        with entry.lock:
            self._refresh_curves(entry, experiment_id, metric, set(trial_ids))
            return dict(entry.trials)

    def metric_names(self, experiment_id: int, trial_ids: Collection[int]) -> list[str]:
        """The validation metrics the experiment reports: those of each trial's newest report
        when first read, and any that a newer report adds."""
        entry = self._entry((experiment_id, None), "")
        with entry.lock, self._service.store.session() as session:
            newest = newest_metric_id(session)
            if entry.seen_id is None:
                entry.names = set(
                    self._service.experiment_metric_names(experiment_id, MetricKind.VALIDATION)
                )
            elif newest > entry.seen_id:
                entry.names |= metric_names_since(
                    session,
                    kind=MetricKind.VALIDATION,
                    after_id=entry.seen_id,
                    trial_ids=trial_ids,
                )
            entry.seen_id = newest
            return sorted(entry.names)

    def _entry(self, key: tuple[int, str | None], mode: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.mode != mode or _stale(entry):
                entry = self._entries[key] = _Entry(mode=mode)
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
            return entry

    def _refresh_curves(
        self, entry: _Entry, experiment_id: int, metric: str, trial_ids: set[int]
    ) -> None:
        """The first read takes the experiment's reports (one query); later ones the reports
        of any experiment newer than the last seen, keeping those of this one's trials."""
        kind = MetricKind.VALIDATION
        with self._service.store.session() as session:
            newest = newest_metric_id(session)
            if entry.seen_id is None:
                rows = experiment_metric_series(
                    session, experiment_id=experiment_id, kind=kind, metric=metric
                )
                entry.looked_back_at = time.monotonic()
            else:
                look_back = time.monotonic() - entry.looked_back_at > LOOKBACK_EVERY_S
                if newest == entry.seen_id and not look_back:
                    return
                after = max(entry.seen_id - LOOKBACK, 0) if look_back else entry.seen_id
                if look_back:
                    entry.looked_back_at = time.monotonic()
                rows = metric_series_since(session, kind=kind, metric=metric, after_id=after)
                unknown = {row[1] for row in rows} - trial_ids - entry.others
                if unknown:
                    mine = trials_of_experiment(
                        session, experiment_id=experiment_id, trial_ids=unknown
                    )
                    entry.others |= unknown - mine
                    trial_ids |= mine
                rows = [row for row in rows if row[1] in trial_ids]
        changed: dict[int, dict[int, float]] = {}
        for report_id, trial_id, step, value in rows:
            if trial_id not in changed:
                old = entry.trials.get(trial_id)
                points = changed[trial_id] = dict(old.points) if old else {}
            else:
                points = changed[trial_id]
            points[step] = value
            newest = max(newest, report_id)
        entry.seen_id = max(newest, entry.seen_id or 0)
        for trial_id, points in changed.items():
            old = entry.trials.get(trial_id)
            if old is None or not _same_points(old.points, points):
                entry.trials[trial_id] = _rebuilt(points, entry.mode)


def _same_points(old: dict[int, float], new: dict[int, float]) -> bool:
    """Equal, NaN included (a trial's diverged validation)."""
    return old.keys() == new.keys() and all(
        a == b or (math.isnan(a) and math.isnan(b)) for a, b in ((old[s], new[s]) for s in old)
    )


def _stale(entry: _Entry) -> bool:
    return time.monotonic() - entry.built_at > REBUILD_AFTER_S


def _rebuilt(points: dict[int, float], mode: str) -> TrialCurve:
    """A new curve of these points: the best value and its step, and the thinned curve as
    JSON (six significant digits, finite values only). New rather than updated in place, so
    a page being built from the old one never mixes the two."""
    finite = sorted((s, v) for s, v in points.items() if math.isfinite(v))
    if not finite:
        return TrialCurve(points=points)
    sign = 1.0 if mode == "max" else -1.0
    best_step, best = max(finite, key=lambda point: sign * point[1])
    thinned = thin(finite)
    return TrialCurve(
        points=points,
        best=best,
        best_step=best_step,
        steps_json=json.dumps([s for s, _ in thinned]),
        values_json=json.dumps([float(f"{v:.6g}") for _, v in thinned]),
    )


def thin(points: list[T]) -> list[T]:
    """At most MAX_POINTS_PER_CURVE points, evenly spread, the first and last kept."""
    if len(points) <= MAX_POINTS_PER_CURVE:
        return points
    step = (len(points) - 1) / (MAX_POINTS_PER_CURVE - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS_PER_CURVE)]
