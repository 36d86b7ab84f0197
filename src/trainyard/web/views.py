"""What each dashboard page shows, read from the Master's service into typed view models.

Templates receive these objects, never the store; chart data travels to the browser as one
JSON document per page (`ExperimentView.chart_data`), down-sampled so a search of a thousand
trials stays a page the browser can take.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from trainyard.config import SearcherName
from trainyard.master.service import MasterService
from trainyard.protocol import (
    CheckpointOut,
    ExperimentOut,
    ExperimentState,
    MetricKind,
    MetricOut,
    TrialOut,
)
from trainyard.store.curve_thinning import thin
from trainyard.store.curves import (
    StoredCurve,
    experiment_curve_metrics,
    experiment_curves,
)
from trainyard.store.dashboard_reads import experiment_trials
from trainyard.web.panels import RocPanel, RungRow, roc_panel, rungs_panel

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
    """One row of an experiment's trial table, its cells formatted here (a thousand rows of
    filters and method calls in the template cost more than the rest of the page)."""

    trial: TrialOut
    best: float | None
    """The trial's best value of the searcher's metric."""
    step: str
    best_text: str
    hyperparameters: list[str]
    """The trial's value of each of the experiment's hyperparameters, in the table's order."""


def _row(trial: TrialOut, best: float | None, names: list[str]) -> TrialRow:
    step = str(trial.batches_trained)
    if trial.total_batches:
        step += f"/{trial.total_batches}"
    return TrialRow(
        trial=trial,
        best=best,
        step=step,
        best_text="" if best is None else f"{best:.4f}",
        hyperparameters=[_cell(trial.hyperparameters.get(name, "")) for name in names],
    )


@dataclass(frozen=True)
class ExperimentView:
    experiment: ExperimentOut
    metric: str
    mode: str
    rows: list[TrialRow]
    hyperparameter_names: list[str]
    best_trial: int | None
    """Number of the trial with the best value of the searcher's metric."""
    chart_json: Markup
    """The charts' data as one HTML-safe JSON document (see `_chart_json`)."""
    roc: RocPanel | None = None
    """The best trial's ROC curve at its best validation, when it stored one."""
    rungs: list[RungRow] | None = None
    """ASHA's rungs; None for other searchers."""


def experiment_view(
    service: MasterService, experiment_id: int, *, panels: bool = True
) -> ExperimentView:
    """The trial table and the charts' data of one experiment: the curves of the searcher's
    metric for every trial (others load on demand, `metric_curves`), the best trial's ROC
    curve and ASHA's rungs. Without `panels` (the live trial table), only the table."""
    experiment = service.get_experiment(experiment_id)
    searcher = service.experiment_config(experiment_id).searcher
    metric, mode = searcher.metric, searcher.mode
    with service.store.session() as session:
        trials = experiment_trials(session, experiment_id=experiment_id)
        curves = experiment_curves(
            session, experiment_id=experiment_id, metric=metric, mode=mode, with_points=panels
        )
    names = sorted({name for t in trials for name in t.hyperparameters})
    rows = [_row(t, curves[t.id].best if t.id in curves else None, names) for t in trials]
    scored = [r for r in rows if r.best is not None]
    pick = max if mode == "max" else min
    top = pick(scored, key=lambda r: r.best).trial if scored else None
    view = ExperimentView(
        experiment=experiment,
        metric=metric,
        mode=mode,
        rows=rows,
        hyperparameter_names=names,
        best_trial=top.number if top else None,
        chart_json=Markup(""),
    )
    if not panels:
        return view
    best_step = curves[top.id].best_step if top is not None else None
    roc = None
    if top is not None and best_step is not None:
        roc = roc_panel(service, trial_id=top.id, trial_number=top.number, batches=best_step)
    with service.store.session() as session:
        metric_names = experiment_curve_metrics(session, experiment_id=experiment_id)
    data = {
        "metric": metric,
        "metricNames": metric_names,
        "bestTrial": top.number if top else None,
        "trials": [
            {
                "number": r.trial.number,
                "best": r.best,
                "hyperparameters": {n: _plottable(r.trial.hyperparameters.get(n)) for n in names},
            }
            for r in scored
        ],
        "hyperparameters": names,
        "roc": roc.chart_data() if roc else None,
    }
    return replace(
        view,
        chart_json=_chart_json(data, metric, curves_json(trials, curves)),
        roc=roc,
        rungs=rungs_panel(service, experiment_id) if searcher.name is SearcherName.ASHA else None,
    )


def metric_curves(service: MasterService, experiment_id: int, metric: str) -> str:
    """Every trial's validation curve of `metric` as JSON, as the experiment page draws them."""
    mode = service.experiment_config(experiment_id).searcher.mode
    with service.store.session() as session:
        trials = experiment_trials(session, experiment_id=experiment_id)
        curves = experiment_curves(session, experiment_id=experiment_id, metric=metric, mode=mode)
    return curves_json(trials, curves)


def curves_json(trials: list[TrialOut], curves: dict[int, StoredCurve]) -> str:
    """[{"n": trial number, "s": [steps], "v": [values]}, ...] for the trials with a curve:
    columns, six significant digits, at most 200 points each, so a thousand curves stay
    small; joined from each curve's stored JSON, never decoded here."""
    parts = [
        f'{{"n":{t.number},"s":{curves[t.id].steps_json},"v":{curves[t.id].values_json}}}'
        for t in trials
        if t.id in curves and curves[t.id].best is not None
    ]
    return "[" + ",".join(parts) + "]"


def _chart_json(data: dict[str, Any], metric: str, curves: str) -> Markup:
    """`data` as HTML-safe JSON (as Jinja's tojson writes it), with "curves": {metric: curves}
    added; the curves are numbers only, so they need no escaping and are not decoded again."""
    head = htmlsafe_json_dumps(data)
    assert head.endswith("}") and len(head) > 2
    return Markup(f'{head[:-1]}, "curves": {{{htmlsafe_json_dumps(metric)}: {curves}}}}}')


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


def _series(reports: list[MetricOut]) -> dict[str, list[list[float]]]:
    """metric name -> [[batches, value], ...] of finite values, thinned evenly."""
    series: dict[str, list[list[float]]] = {}
    for report in reports:
        for name, value in report.values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                series.setdefault(name, []).append([report.batches, float(value)])
    return {name: thin(points) for name, points in series.items()}


def _cell(value: Any) -> str:
    """A hyperparameter as the table shows it: floats to six significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _plottable(value: Any) -> float | str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value)
    return float(value) if isinstance(value, int | float) else str(value)


def _folder_bytes(folder: Path) -> int | None:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return None
