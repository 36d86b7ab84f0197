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

from trainyard.master.records import FIXED_COLUMNS, TrialRecord


def columns(records: list[TrialRecord]) -> list[str]:
    """All columns in order: fixed, hyperparameters, best report, checkpoint (union of trials)."""
    rows = [r.row() for r in records]
    hyperparameters = dict.fromkeys(k for row in rows for k in row if k.startswith("hp."))
    best = dict.fromkeys(f"best.{k}" for r in records for k in r.best)
    return [*FIXED_COLUMNS, *hyperparameters, "best.step", *best, "checkpoint"]


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
