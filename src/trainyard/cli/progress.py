"""`trainyard run` outside a terminal: one plain line per event, printed as it happens.

A live table is redrawn in place, which a log file, `| tee` or a batch job's output cannot
show: rich prints it once, when the run ends. The reporter instead compares the store with
what it has already printed on every runner tick, so each event prints once, soon after it
happened, and the console flushes every line:

    12:00:01 trial 0 (id 1) launched: batch_size=64, lr=0.003
    12:00:03 trial 0 (id 1) training step 5/40: loss 0.6931, samples/s 1,234
    12:00:04 trial 0 (id 1) validation step 20/40: val_auc 0.8123, val_accuracy 0.7402, ...
    12:00:06 trial 0 (id 1) COMPLETED at step 40/40; best val_auc 0.8312 at step 40

Training reports arrive every `log_period_batches`; the newest one at each tick is printed
(at most one per TRAINYARD_POLL_INTERVAL_S), every validation report is. A trial that is
retried prints its restart reason and a new launch line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Console
from rich.text import Text

from trainyard.cli.display import hyperparameters_text
from trainyard.config.schema import SearcherSpec
from trainyard.master.service import MasterService
from trainyard.protocol import MetricKind, MetricOut, TrialOut, TrialState

_TRACEBACK = "Traceback (most recent call last):"

ReportKey = tuple[int, datetime]
"""A metric report's identity: its step and when it arrived (a retry may repeat a step)."""


@dataclass
class _Seen:
    """What has been printed of one trial."""

    state: str | None = None
    """None until a state was printed; a trial running before this run started is not."""
    num_restarts: int = 0
    training: ReportKey | None = None
    validations: set[ReportKey] = field(default_factory=set)


class ProgressReporter:
    """Prints each trial's launches, reports and end once; call `tick` after each runner tick."""

    def __init__(
        self,
        service: MasterService,
        experiment_id: int,
        *,
        searcher: SearcherSpec,
        console: Console,
    ) -> None:
        self._service = service
        self._experiment_id = experiment_id
        self._searcher = searcher
        self._console = console
        self._seen = {t.id: self._already_known(t) for t in service.list_trials(experiment_id)}

    def tick(self) -> None:
        """Print what happened since the last tick, trial by trial."""
        for trial in self._service.list_trials(self._experiment_id):
            for line in self._events(trial):
                self._console.print(Text(f"{time.strftime('%H:%M:%S')} {line}"))

    def _already_known(self, trial: TrialOut) -> _Seen:
        """A resumed experiment's history was printed by the run that made it."""
        training, _ = self._service.latest_metrics(trial.id)
        validations = self._service.trial_metrics(trial.id, "validation")
        return _Seen(
            state=trial.state if trial.state.is_finished() else None,
            num_restarts=trial.num_restarts,
            training=_key(training) if training else None,
            validations={_key(m) for m in validations},
        )

    def _events(self, trial: TrialOut) -> list[str]:
        seen = self._seen.setdefault(trial.id, _Seen())
        if trial.state == seen.state and trial.num_restarts == seen.num_restarts:
            return [] if trial.state.is_finished() else self._reports(trial, seen)
        name = f"trial {trial.number} (id {trial.id})"
        restarted = trial.num_restarts > seen.num_restarts
        lines = []
        if restarted and trial.error:
            lines.append(f"{name} {_headline(trial.error)}")
        if trial.state == TrialState.RUNNING and (seen.state != trial.state or restarted):
            lines.append(f"{name} launched: {hyperparameters_text(trial.hyperparameters) or '-'}")
        lines += self._reports(trial, seen)
        if trial.state != seen.state and trial.state.is_finished():
            lines.append(self._ended(trial))
        seen.state, seen.num_restarts = trial.state, trial.num_restarts
        return lines

    def _reports(self, trial: TrialOut, seen: _Seen) -> list[str]:
        """New training and validation reports of a trial, oldest first."""
        training, validation = self._service.latest_metrics(trial.id)
        new: list[MetricOut] = []
        if training is not None and _key(training) != seen.training:
            seen.training = _key(training)
            new.append(training)
        if validation is not None and _key(validation) not in seen.validations:
            for report in self._service.trial_metrics(trial.id, "validation"):
                if _key(report) not in seen.validations:
                    seen.validations.add(_key(report))
                    new.append(report)
        new.sort(key=lambda m: m.reported_at)
        return [self._report_line(trial, m) for m in new]

    def _report_line(self, trial: TrialOut, report: MetricOut) -> str:
        head = f"trial {trial.number} (id {trial.id}) {report.kind} step "
        head += _step(report.batches, trial.total_batches)
        if report.kind == MetricKind.TRAINING and "samples_per_second" in report.values:
            loss = report.values.get("loss", float("nan"))
            speed = report.values.get("samples_per_second", float("nan"))
            return f"{head}: loss {loss:.4f}, samples/s {speed:,.0f}"
        metric = self._searcher.metric
        names = sorted(report.values, key=lambda k: (k != metric, k))
        return f"{head}: " + ", ".join(f"{k} {report.values[k]:.4f}" for k in names)

    def _ended(self, trial: TrialOut) -> str:
        line = f"trial {trial.number} (id {trial.id}) {trial.state} at step "
        line += _step(trial.batches_trained, trial.total_batches)
        metric = self._searcher.metric
        best = self._service.best_validation(trial.id, metric=metric, mode=self._searcher.mode)
        if best is not None:
            line += f"; best {metric} {best.values[metric]:.4f} at step {best.batches}"
        if trial.state == TrialState.ERRORED and trial.error:
            line += f": {_headline(trial.error)}"
        return line


def _key(report: MetricOut) -> ReportKey:
    return report.batches, report.reported_at


def _step(batches: int, total: int | None) -> str:
    return f"{batches}/{total}" if total else str(batches)


def _headline(error: str) -> str:
    """An error's first line; where that opens a Python traceback, the exception's own line.

    A worker reports an unexpected exception as `Name: ` and its traceback, whose frames are
    indented and whose first unindented line after the header names the exception again.
    """
    lines = error.splitlines() or [""]
    if not lines[0].endswith(_TRACEBACK):
        return lines[0]
    exception = next((line for line in lines[1:] if line and not line[0].isspace()), "")
    name = exception.split(":", 1)[0].rsplit(".", 1)[-1]
    return lines[0].removesuffix(_TRACEBACK).removesuffix(f"{name}: ") + exception
