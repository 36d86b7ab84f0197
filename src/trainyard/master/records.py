"""What `trainyard show` reports about each trial of an experiment, built from the store.

The Master builds the records (for the embedded CLI directly, for a server's clients over
`GET /api/v1/experiments/{ref}/records`); cli/trial_records.py writes them as CSV or JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from trainyard.protocol import TrialOut

if TYPE_CHECKING:  # the CLI's client imports the records, not the store and searchers
    from trainyard.master.service import MasterService

FIXED_COLUMNS = ("trial", "id", "state", "batches_trained", "total_batches", "restarts")


class TrialRecord(BaseModel):
    """A trial with its best validation report and newest checkpoint, as one row."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

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
            **dict(zip(FIXED_COLUMNS, fixed, strict=True)),
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
