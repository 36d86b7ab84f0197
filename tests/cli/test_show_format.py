"""`trainyard show --format csv|json`: the trial table as data, equal to the store."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

from tests.cli.conftest import MARKUP, StoredExperiment
from tests.integration.helpers import cli_env, run_cli
from trainyard.cli.trial_records import records_csv, records_json
from trainyard.master.records import TrialRecord
from trainyard.protocol import TrialOut

FIXED = ["trial", "id", "state", "batches_trained", "total_batches", "restarts"]
BEST = ["best.step", "best.val_auc", "best.val_accuracy", "best.val_loss"]


def _show(stored: StoredExperiment, *args: str) -> str:
    result = run_cli(["show", "literal", *args], cli_env(stored.home), timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _columns(stored: StoredExperiment) -> list[str]:
    """Fixed columns, the hyperparameters in the store's order, the best report, checkpoint."""
    hyperparameters = stored.service.get_trial(stored.trial_ids[0]).hyperparameters
    assert set(hyperparameters) == {"lr", "act", "widths"}
    return [*FIXED, *(f"hp.{k}" for k in hyperparameters), *BEST, "checkpoint"]


def _expected(stored: StoredExperiment) -> list[dict[str, object]]:
    """The two trials of `stored`, read back from the store."""
    service = stored.service
    first, second = (service.get_trial(i) for i in stored.trial_ids)
    best = service.best_validation(first.id, metric="val_auc", mode="max")
    assert best is not None and best.batches == 20
    rows = []
    for trial, report in ((first, best), (second, None)):
        values = report.values if report else {}
        rows.append(
            {
                "trial": trial.number,
                "id": trial.id,
                "state": trial.state,
                "batches_trained": trial.batches_trained,
                "total_batches": trial.total_batches,
                "restarts": trial.num_restarts,
                **{f"hp.{k}": v for k, v in trial.hyperparameters.items()},
                "best.step": report.batches if report else None,
                **{f"best.{k}": values.get(k) for k in ("val_auc", "val_accuracy", "val_loss")},
                "checkpoint": stored.checkpoint if report else None,
            }
        )
    return rows


def test_json_lists_each_trial_with_typed_values(stored: StoredExperiment) -> None:
    rows = json.loads(_show(stored, "--format", "json"))
    columns = _columns(stored)
    assert [list(row) for row in rows] == [columns, columns]
    assert rows == _expected(stored)
    assert rows[0]["hp.widths"] == [8, 4]
    assert {row["hp.act"] for row in rows} == {MARKUP[1], MARKUP[2]}
    assert rows[1]["best.val_auc"] is None


def test_csv_has_a_header_and_one_row_per_trial(stored: StoredExperiment) -> None:
    reader = csv.reader(io.StringIO(_show(stored, "--format", "csv")))
    header, *rows = list(reader)
    assert header == _columns(stored)
    expected = [[_csv_field(v) for v in row.values()] for row in _expected(stored)]
    assert rows == expected
    assert float(rows[0][header.index("best.val_auc")]) == 0.75


def _csv_field(value: object) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list) else str(value)


def test_table_is_still_the_default(stored: StoredExperiment) -> None:
    out = _show(stored)
    assert "best val_auc" in out  # the searcher's metric
    assert "0.7500" in out


def test_an_unknown_format_names_the_allowed_ones(tmp_path: Path) -> None:
    result = run_cli(["show", "x", "--format", "xml"], cli_env(tmp_path / "home"), timeout=120)
    assert result.returncode == 2
    message = " ".join(result.stderr.replace("\u2502", " ").split())  # typer draws a box
    assert "Invalid value for '--format'" in message
    assert "'xml' is not one of 'table', 'csv', 'json'" in message


def test_non_finite_values_are_strings_in_json_and_csv() -> None:
    trial = TrialOut(
        id=1,
        experiment_id=1,
        number=0,
        state="COMPLETED",
        hyperparameters={"lr": math.inf},
        batches_trained=4,
        total_batches=4,
        num_restarts=0,
        started_at=datetime.now(UTC),
        ended_at=None,
        last_heartbeat_at=None,
        worker_key=None,
        log_path=None,
        error=None,
    )
    values = {"val_auc": math.nan, "val_loss": -math.inf}
    record = TrialRecord(trial=trial, best_step=4, best=values, checkpoint=None)
    row = json.loads(records_json([record]))[0]
    assert (row["hp.lr"], row["best.val_auc"], row["best.val_loss"]) == ("inf", "nan", "-inf")
    (csv_row,) = csv.DictReader(io.StringIO(records_csv([record])))
    assert (csv_row["hp.lr"], csv_row["best.val_auc"], csv_row["best.val_loss"]) == (
        "inf",
        "nan",
        "-inf",
    )
