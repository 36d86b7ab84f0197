"""What the terminal shows: the live trial table during a run and the tables of list/show."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from trainyard.master.records import TrialRecord
from trainyard.protocol import ExperimentOut, ExperimentState, MetricOut, TrialOut, TrialState


def trial_table(
    trials: list[TrialOut],
    latest: dict[int, tuple[MetricOut | None, MetricOut | None]],
    *,
    title: str,
    metric: str = "val_auc",
) -> Table:
    """One row per trial: state, progress, throughput, loss, the searcher's validation metric
    (`metric`) and ETA.

    `title` is markup; cells are rich markup too, so text from outside is escaped.
    """
    table = Table(title=title, title_justify="left")
    for column in ("trial", "state", "step", "samples/s", "loss", escape(metric), "ETA"):
        table.add_column(column, justify="left" if column in ("trial", "state") else "right")
    for trial in trials:
        training, validation = latest.get(trial.id, (None, None))
        table.add_row(
            str(trial.number),
            _state(trial.state),
            _progress(trial),
            _value(training, "samples_per_second", "{:,.0f}"),
            _value(training, "loss", "{:.4f}"),
            _value(validation, metric, "{:.4f}"),
            _eta(trial, training),
        )
    return table


def experiments_table(experiments: list[ExperimentOut]) -> Table:
    table = Table(title="experiments", title_justify="left")
    for column in ("id", "name", "state", "trials", "created", "ended"):
        table.add_column(column)
    for e in experiments:
        table.add_row(
            str(e.id),
            escape(e.name),
            _state(e.state),
            str(e.num_trials),
            _time(e.created_at),
            _time(e.ended_at),
        )
    return table


def trials_detail_table(records: list[TrialRecord]) -> Table:
    """`trainyard show`: one row per trial with the best value of the searcher's metric (the
    first of each best report) and its hyperparameters."""
    metric = next((next(iter(r.best)) for r in records if r.best), "val_auc")
    table = Table(title="trials", title_justify="left")
    columns = ("trial", "id", "state", "step", "restarts", f"best {escape(metric)}")
    for column in (*columns, "hyperparameters"):
        table.add_column(column)
    for record in records:
        t = record.trial
        best_auc = record.best.get(metric)
        table.add_row(
            str(t.number),
            str(t.id),
            _state(t.state),
            _progress(t),
            str(t.num_restarts),
            "-" if best_auc is None else _number(best_auc, "{:.4f}"),
            escape(hyperparameters_text(t.hyperparameters)) or "-",
        )
    return table


def trial_errors(records: list[TrialRecord]) -> list[Text]:
    """Each trial's recorded error (the reason and its worker's log tail), printed literally."""
    return [
        Text.assemble((f"trial {r.trial.number} (id {r.trial.id}) error: ", "red"), r.trial.error)
        for r in records
        if r.trial.error
    ]


def hyperparameters_text(hyperparameters: dict[str, object]) -> str:
    """`lr=0.003, batch_size=64`: a trial's hyperparameters on one line (not escaped)."""
    return ", ".join(f"{k}={v}" for k, v in hyperparameters.items())


_STATE_COLOURS = {
    TrialState.COMPLETED: "green",
    TrialState.RUNNING: "cyan",
    TrialState.ERRORED: "red",
    TrialState.STOPPED: "yellow",
    TrialState.PAUSED: "yellow",
}
"""Colours by state name; experiment states share these names (StrEnum values)."""


def _state(state: TrialState | ExperimentState) -> str:
    colour = _STATE_COLOURS.get(state, "white")
    return f"[{colour}]{escape(state)}[/{colour}]"


def _progress(trial: TrialOut) -> str:
    if trial.total_batches:
        return f"{trial.batches_trained}/{trial.total_batches}"
    return str(trial.batches_trained)


def _value(metric: MetricOut | None, key: str, fmt: str) -> str:
    if metric is None or key not in metric.values:
        return "-"
    return _number(metric.values[key], fmt)


def _number(value: float, fmt: str) -> str:
    return "inf" if math.isinf(value) else fmt.format(value)


def _eta(trial: TrialOut, training: MetricOut | None) -> str:
    if trial.state != TrialState.RUNNING or not trial.total_batches or training is None:
        return "-"
    rate = training.values.get("batches_per_second", 0.0)
    if rate <= 0:
        return "-"
    seconds = int((trial.total_batches - trial.batches_trained) / rate)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _time(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"  # type: ignore[attr-defined]
