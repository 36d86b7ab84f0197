"""Which of a trial's checkpoints to export: the latest, the best by the searcher's metric,
or the one at a given step. A pure choice over what the store lists, so it is tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainyard.errors import CheckpointError, ConfigError
from trainyard.protocol import CheckpointOut, MetricOut

LATEST = "latest"
BEST = "best"


def choose_checkpoint(
    checkpoints: Sequence[CheckpointOut],
    validations: Sequence[MetricOut],
    *,
    which: str,
    metric: str,
    mode: str,
    trial: str,
) -> CheckpointOut:
    """The checkpoint ``which`` names among ``checkpoints`` (the trial's kept ones).

    Args:
        checkpoints: the trial's checkpoints on disk, as the store lists them.
        validations: the trial's validation reports.
        which: "latest" (the highest step), "best" (of the kept checkpoints that have a
            validation report at their step, the one best by ``metric``), or a step number.
        metric: the searcher's metric; ``mode`` says whether "max" or "min" is best.
        trial: how messages name the trial.

    Raises:
        CheckpointError: the trial has no checkpoint, or none that ``which`` names.
        ConfigError: ``which`` is none of the three forms.
    """
    if not which.isdigit() and which not in (LATEST, BEST):
        raise ConfigError(
            [f"`--checkpoint`: expected latest, best or a step number, got {which!r}"],
            source="trainyard export",
        )
    if not checkpoints:
        raise CheckpointError(
            f"{trial} has no checkpoint to export yet; a trial writes one every "
            "`checkpoint.period` and when it ends, so export it once it has trained that far, "
            "or pick a trial that has one in the checkpoint column of `trainyard show`"
        )
    newest_first = sorted(checkpoints, key=lambda c: c.batches, reverse=True)
    steps = ", ".join(str(c.batches) for c in newest_first)
    if which == LATEST:
        return newest_first[0]
    if which == BEST:
        return _best(newest_first, validations, metric=metric, mode=mode, trial=trial, steps=steps)
    for checkpoint in newest_first:
        if checkpoint.batches == int(which):
            return checkpoint
    raise CheckpointError(
        f"{trial} has no checkpoint at step {int(which)}; it keeps checkpoints at steps "
        f"{steps} (`checkpoint.keep` says how many are kept)"
    )


def _best(
    newest_first: Sequence[CheckpointOut],
    validations: Sequence[MetricOut],
    *,
    metric: str,
    mode: str,
    trial: str,
    steps: str,
) -> CheckpointOut:
    """Of the checkpoints with a validation at their step, the best; ties go to the newest."""
    scores = {m.batches: m.values[metric] for m in validations if metric in m.values}
    scored = [c for c in newest_first if c.batches in scores]
    if not scored:
        validated = ", ".join(str(step) for step in sorted(scores)) or "none"
        raise CheckpointError(
            f"{trial} has no checkpoint at a step with a validation of {metric}: checkpoints "
            f"at steps {steps}, validations at {validated}; export `--checkpoint latest`, or "
            "make `checkpoint.period` a multiple of `training.validation_period` next time"
        )
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda c: sign * scores[c.batches])
