"""`trainyard export TRIAL --onnx DIR`: a trial's model as model.onnx + preprocess.json."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from trainyard.config.trial import TrialConfig
from trainyard.errors import TrainyardError
from trainyard.export.checkpoints import choose_checkpoint
from trainyard.export.trial import export_trial
from trainyard.master.service import MasterService
from trainyard.protocol import MetricKind


def export_onnx_files(
    service: MasterService,
    *,
    trial_id: int,
    folder: Path,
    which: str,
    opset: int,
    console: Console,
) -> None:
    """Find the trial's config and chosen checkpoint in the store, export, say what was
    written and how CMSSW reads it."""
    trial = service.get_trial(trial_id)
    experiment = service.get_experiment(trial.experiment_id)
    searcher = service.experiment_config(trial.experiment_id).searcher
    label = f"trial {trial.id} (number {trial.number} of experiment {experiment.name!r})"
    chosen = choose_checkpoint(
        service.trial_checkpoints(trial_id),
        service.trial_metrics(trial_id, MetricKind.VALIDATION),
        which=which,
        metric=searcher.metric,
        mode=searcher.mode,
        trial=label,
    )
    config = service.trial_config(trial_id)
    if not isinstance(config, TrialConfig):
        raise TrainyardError(
            f"{label} is a script trial: trainyard does not know its model, so it cannot "
            f"export it; its newest checkpoint folder is {chosen.path}, which your own code "
            "can export"
        )
    exported = export_trial(
        config,
        Path(chosen.path),
        folder,
        opset=opset,
        name=f"model {config.model.name!r} of {label}",
    )
    inputs = ", ".join(item.name for item in exported.inputs)
    console.print(
        f"exported {label} at step {exported.batches} ({which} checkpoint)\n"
        f"  {exported.onnx}: inputs {inputs}; output softmax over "
        f"{', '.join(exported.output_names)}\n"
        f"  {exported.preprocess}: the preprocessing CMSSW applies to each input "
        "(docs/export.md)",
        markup=False,
        highlight=False,
    )
