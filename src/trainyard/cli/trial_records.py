"""`trainyard show --format csv|json`: an experiment's trials as data for scripts and papers.

One row per trial, in trial order. Columns: `trial` (its number), `id`, `state`,
`batches_trained`, `total_batches`, `restarts`, one `hp.<name>` column per hyperparameter,
then the trial's best validation report by the searcher's metric: `best.step` and one
`best.<metric>` column per value of that report (the searcher's metric first), and
`checkpoint`, the newest checkpoint the store lists. A trial without a value in a column
gets an empty CSV field or a JSON null. Non-finite numbers are written as `inf`, `-inf` and
`nan` (strings in JSON, which has no such numbers; `float()` reads them back).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from trainyard.master.service import MasterService
from trainyard.protocol import TrialOut

_FIXED = ("trial", "id", "state", "batches_trained", "total_batches", "restarts")


class TrialRecord(BaseModel):
    """A trial with its best validation report and newest checkpoint, as one row."""

    model_config = ConfigDict(frozen=True)

    trial: TrialOut
    best_step: int | None
    best: dict[str, float]
    """Values of the best validation report (by the searcher's metric); empty without one."""
    checkpoint: str | None

    def row(self) -> dict[str, Any]:
        """Column name -> typed value; hyperparameters and metrics present in this trial only."""
        t = self.trial
        fixed = (t.number, t.id, t.state, t.batches_trained, t.total_batches, t.num_restarts)
        return {
            **dict(zip(_FIXED, fixed, strict=True)),
            **{f"hp.{k}": v for k, v in t.hyperparameters.items()},
            "best.step": self.best_step,
            **{f"best.{k}": v for k, v in self.best.items()},
            "checkpoint": self.checkpoint,
        }


def trial_records(service: MasterService, experiment_id: int) -> list[TrialRecord]:
    """Every trial of an experiment with what `show` reports about it, read from the store."""
    searcher = service.experiment_config(experiment_id).searcher
    metric = searcher.metric
    records = []
    for trial in service.list_trials(experiment_id):
        best = service.best_validation(trial.id, metric=metric, mode=searcher.mode)
        found = best.values if best else {}
        values = {k: found[k] for k in sorted(found, key=lambda k: (k != metric, k))}
        records.append(
            TrialRecord(
                trial=trial,
                best_step=best.batches if best else None,
                best=values,
                checkpoint=service.latest_checkpoint_path(trial.id),
            )
        )
    return records


def columns(records: list[TrialRecord]) -> list[str]:
    """All columns in order: fixed, hyperparameters, best report, checkpoint (union of trials)."""
    rows = [r.row() for r in records]
    hyperparameters = dict.fromkeys(k for row in rows for k in row if k.startswith("hp."))
    best = dict.fromkeys(f"best.{k}" for r in records for k in r.best)
    return [*_FIXED, *hyperparameters, "best.step", *best, "checkpoint"]


def records_json(records: list[TrialRecord]) -> str:
    """A JSON list of objects, one per trial, every object with every column."""
    names = columns(records)
    rows = [{n: _json_value(r.row().get(n)) for n in names} for r in records]
    return json.dumps(rows, indent=2, allow_nan=False) + "\n"


def records_csv(records: list[TrialRecord]) -> str:
    """CSV with a header row; lists and mappings among hyperparameters are written as JSON."""
    names = columns(records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for record in records:
        row = record.row()
        writer.writerow([_csv_value(row.get(n)) for n in names])
    return out.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)
