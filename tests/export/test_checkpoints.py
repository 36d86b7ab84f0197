"""Which checkpoint `trainyard export` takes: latest, best by the searcher's metric, or a step."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trainyard.errors import CheckpointError, ConfigError
from trainyard.export.checkpoints import choose_checkpoint
from trainyard.protocol import CheckpointOut, MetricKind, MetricOut

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TRIAL = "trial 7 (number 2 of experiment 'x')"


def checkpoint(step: int) -> CheckpointOut:
    return CheckpointOut(batches=step, path=f"/c/step-{step:08d}", epoch=None, created_at=NOW)


def validation(step: int, auc: float) -> MetricOut:
    return MetricOut(
        kind=MetricKind.VALIDATION,
        batches=step,
        epoch=step / 10,
        values={"val_auc": auc, "val_loss": 1 - auc},
        reported_at=NOW,
    )


KEPT = [checkpoint(20), checkpoint(40), checkpoint(30)]
REPORTS = [validation(10, 0.95), validation(20, 0.90), validation(30, 0.92), validation(40, 0.91)]


def choose(which: str, *, mode: str = "max", metric: str = "val_auc", kept=KEPT) -> int:
    return choose_checkpoint(
        kept, REPORTS, which=which, metric=metric, mode=mode, trial=TRIAL
    ).batches


def test_latest_best_and_a_step() -> None:
    assert choose("latest") == 40
    # Step 10 validated best, but its checkpoint is gone: the best of those kept is 30.
    assert choose("best") == 30
    assert choose("best", metric="val_loss", mode="min") == 30
    assert choose("best", mode="min") == 20
    assert choose("20") == 20


def test_a_trial_without_checkpoints_is_refused_with_what_to_do() -> None:
    with pytest.raises(CheckpointError) as caught:
        choose("latest", kept=[])
    assert str(caught.value) == (
        "trial 7 (number 2 of experiment 'x') has no checkpoint to export yet; a trial writes "
        "one every `checkpoint.period` and when it ends, so export it once it has trained "
        "that far, or pick a trial that has one in the checkpoint column of `trainyard show`"
    )


def test_a_step_without_checkpoint_lists_the_kept_ones() -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at step 25; it keeps checkpoints"):
        choose("25")
    with pytest.raises(CheckpointError, match=r"at steps 40, 30, 20 \(`checkpoint.keep`"):
        choose("25")


def test_best_without_a_validated_checkpoint_says_how_to_get_one() -> None:
    with pytest.raises(CheckpointError) as caught:
        choose("best", kept=[checkpoint(25)])
    assert str(caught.value) == (
        f"{TRIAL} has no checkpoint at a step with a validation of val_auc: checkpoints at "
        "steps 25, validations at 10, 20, 30, 40; export `--checkpoint latest`, or make "
        "`checkpoint.period` a multiple of `training.validation_period` next time"
    )


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigError, match="`--checkpoint`: expected latest, best or a step"):
        choose("newest")
