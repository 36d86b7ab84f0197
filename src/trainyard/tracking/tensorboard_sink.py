"""TensorBoard event files per trial: DIR/<experiment>-<id>/trial-<trial id>/, with each report's
values as scalars `training/<name>` and `validation/<name>` at the trial's batch count, and at
the trial's end its hyperparameters beside its best validation (TensorBoard's HParams view).

Written with tensorboardX, which needs neither torch nor TensorFlow in the Master. A resumed
Master adds a new event file to the same folder; TensorBoard reads them as one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trainyard.config.tracking import TensorBoardSpec
from trainyard.tracking.events import MetricsLogged, TrackingEvent, TrialEnded

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter


class TensorBoardSink:
    """The event files of one trainyard experiment's trials."""

    def __init__(self, spec: TensorBoardSpec, experiment_name: str, experiment_id: int) -> None:
        self._root = Path(spec.dir) / f"{experiment_name}-{experiment_id}"
        self.description = f"TensorBoard event files under {self._root}"
        self._writers: dict[int, SummaryWriter] = {}

    def handle(self, event: TrackingEvent) -> None:
        if isinstance(event, MetricsLogged):
            writer = self._writer(event.trial_id)
            for name, value in event.values.items():
                writer.add_scalar(f"{event.kind.value}/{name}", value, event.batches)
            writer.flush()
        elif isinstance(event, TrialEnded):
            writer = self._writer(event.trial_id)
            if event.hyperparameters:
                writer.add_hparams(
                    dict(event.hyperparameters),
                    {f"best/{name}": value for name, value in event.best_metrics.items()},
                    name=".",
                )
            writer.close()
            del self._writers[event.trial_id]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, trial_id: int) -> SummaryWriter:
        writer = self._writers.get(trial_id)
        if writer is None:
            from tensorboardX import SummaryWriter

            writer = SummaryWriter(logdir=str(self._root / f"trial-{trial_id}"))
            self._writers[trial_id] = writer
        return writer
