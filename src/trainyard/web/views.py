"""What each dashboard page shows, read from the Master's service into typed view models.

Templates receive these objects, never the store; chart data travels to the browser as one
JSON document per page (`ExperimentView.chart_data`), down-sampled so a search of a thousand
trials stays a page the browser can take.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from trainyard.master.service import MasterService
from trainyard.protocol import (
    CheckpointOut,
    ExperimentOut,
    ExperimentState,
    MetricKind,
    MetricOut,
    TrialOut,
)

MAX_POINTS_PER_CURVE = 200
"""Points per trial and metric sent to the browser; longer curves are thinned evenly."""
LOG_TAIL_BYTES = 64 * 1024
PAGE_SIZE = 50


@dataclass(frozen=True)
class ExperimentFilters:
    """The experiments page's filters; empty strings match everything."""

    state: ExperimentState | None = None
    query: str = ""
    """A substring of the name, in any case."""
    project: str = ""
    owner: str = ""

    def matches(self, experiment: ExperimentOut) -> bool:
        return (
            (self.state is None or experiment.state == self.state)
            and self.query.lower() in experiment.name.lower()
            and (not self.project or experiment.project == self.project)
            and (not self.owner or experiment.owner == self.owner)
        )

    def query_string(self, page: int) -> str:
        """The address of another page of the same listing."""
        state = self.state.value if self.state else ""
        return urlencode(
            {
                "q": self.query,
                "state": state,
                "project": self.project,
                "owner": self.owner,
                "page": page,
            }
        )


@dataclass(frozen=True)
class ExperimentsPage:
    experiments: list[ExperimentOut]
    filters: ExperimentFilters
    page: int
    has_next: bool
    projects: list[str]
    """The projects the user sees experiments of, for the project filter."""
    owners: list[str]


def experiments_page(
    service: MasterService,
    *,
    project_ids: Collection[int] | None,
    filters: ExperimentFilters,
    page: int,
) -> ExperimentsPage:
    """Newest first, of the projects in `project_ids` (None: all), filtered, PAGE_SIZE a page."""
    visible = service.list_experiments(limit=10_000, project_ids=project_ids)
    found = [e for e in visible if filters.matches(e)]
    found.sort(key=lambda e: (e.created_at, e.id), reverse=True)
    start = (page - 1) * PAGE_SIZE
    return ExperimentsPage(
        experiments=found[start : start + PAGE_SIZE],
        filters=filters,
        page=page,
        has_next=len(found) > start + PAGE_SIZE,
        projects=sorted({e.project for e in visible}),
        owners=sorted({e.owner for e in visible if e.owner}),
    )


@dataclass(frozen=True)
class TrialRow:
    """One row of an experiment's trial table."""

    trial: TrialOut
    best: float | None
    """The trial's best value of the searcher's metric."""


@dataclass(frozen=True)
class ExperimentView:
    experiment: ExperimentOut
    metric: str
    mode: str
    rows: list[TrialRow]
    hyperparameter_names: list[str]
    best_trial: int | None
    """Number of the trial with the best value of the searcher's metric."""
    chart_data: dict[str, Any] = field(default_factory=dict)


def experiment_view(service: MasterService, experiment_id: int) -> ExperimentView:
    """The trial table and the charts' data of one experiment: the curves of the searcher's
    metric for every trial (others load on demand, `metric_curves`)."""
    experiment = service.get_experiment(experiment_id)
    searcher = service.experiment_config(experiment_id).searcher
    metric, mode = searcher.metric, searcher.mode
    trials = service.list_trials(experiment_id)
    series = service.experiment_metric_series(experiment_id, MetricKind.VALIDATION, metric)
    rows = [TrialRow(t, _best(series.get(t.id, []), mode)) for t in trials]
    scored = [r for r in rows if r.best is not None]
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda r: r.best).trial.number if scored else None
    names = sorted({name for t in trials for name in t.hyperparameters})
    reported = service.experiment_metric_names(experiment_id, MetricKind.VALIDATION)
    return ExperimentView(
        experiment=experiment,
        metric=metric,
        mode=mode,
        rows=rows,
        hyperparameter_names=names,
        best_trial=best,
        chart_data={
            "metric": metric,
            "metricNames": reported,
            "bestTrial": best,
            "curves": {metric: _curves(trials, series)},
            "trials": [
                {
                    "number": r.trial.number,
                    "best": r.best,
                    "hyperparameters": {
                        n: _plottable(r.trial.hyperparameters.get(n)) for n in names
                    },
                }
                for r in scored
            ],
            "hyperparameters": names,
        },
    )


def metric_curves(service: MasterService, experiment_id: int, metric: str) -> list[dict[str, Any]]:
    """Every trial's validation curve of `metric`, as the experiment page draws them."""
    trials = service.list_trials(experiment_id)
    return _curves(
        trials, service.experiment_metric_series(experiment_id, MetricKind.VALIDATION, metric)
    )


@dataclass(frozen=True)
class TrialView:
    trial: TrialOut
    experiment: ExperimentOut
    config_yaml: str
    checkpoints: list[tuple[CheckpointOut, int | None]]
    """Each checkpoint with its size in bytes on disk (None when it cannot be read)."""
    chart_data: dict[str, Any]


def trial_view(service: MasterService, trial_id: int) -> TrialView:
    trial = service.get_trial(trial_id)
    config = service.trial_config(trial_id)
    metrics = {
        kind.value: _series(service.trial_metrics(trial_id, kind))
        for kind in (MetricKind.TRAINING, MetricKind.VALIDATION)
    }
    return TrialView(
        trial=trial,
        experiment=service.get_experiment(trial.experiment_id),
        config_yaml=yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
        checkpoints=[
            (c, _folder_bytes(Path(c.path))) for c in service.trial_checkpoints(trial_id)
        ],
        chart_data={"metrics": metrics},
    )


def log_tail(trial: TrialOut) -> str:
    """The end of the trial's worker log (the last LOG_TAIL_BYTES), or a note why none."""
    if not trial.log_path:
        return "(no log yet: the trial has not started)"
    path = Path(trial.log_path)
    try:
        with path.open("rb") as log:
            log.seek(max(path.stat().st_size - LOG_TAIL_BYTES, 0))
            return log.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"(cannot read {path}: {error.strerror})"


def _best(series: list[tuple[int, float]], mode: str) -> float | None:
    values = [value for _, value in series if math.isfinite(value)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _curves(
    trials: list[TrialOut], series: dict[int, list[tuple[int, float]]]
) -> list[dict[str, Any]]:
    """[{"n": trial number, "s": [steps], "v": [values]}, ...]: columns, six significant
    digits and at most MAX_POINTS_PER_CURVE points, so a thousand curves stay small."""
    curves = []
    for trial in trials:
        pairs = [
            (step, float(f"{v:.6g}")) for step, v in series.get(trial.id, []) if math.isfinite(v)
        ]
        if pairs:
            pairs = _thin(pairs)
            curves.append(
                {"n": trial.number, "s": [s for s, _ in pairs], "v": [v for _, v in pairs]}
            )
    return curves


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(reports: list[MetricOut]) -> dict[str, list[list[float]]]:
    """metric name -> [[batches, value], ...] of finite values, thinned evenly."""
    series: dict[str, list[list[float]]] = {}
    for report in reports:
        for name, value in report.values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                series.setdefault(name, []).append([report.batches, float(value)])
    return {name: _thin(points) for name, points in series.items()}


def _thin(points: list[Any]) -> list[Any]:
    if len(points) <= MAX_POINTS_PER_CURVE:
        return points
    step = (len(points) - 1) / (MAX_POINTS_PER_CURVE - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS_PER_CURVE)]


def _plottable(value: Any) -> float | str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value)
    return float(value) if isinstance(value, int | float) else str(value)


def _folder_bytes(folder: Path) -> int | None:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return None
