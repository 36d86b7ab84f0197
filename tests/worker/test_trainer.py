"""The training loop in-process on toy data: set-up checks and the non-finite guard."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from trainyard.config import parse_experiment
from trainyard.config.trial import resolve_trial
from trainyard.errors import ConfigError, ModelError
from trainyard.protocol import TrialSpec
from trainyard.worker.distributed import World
from trainyard.worker.nonfinite import NonFiniteGuard, NonFiniteLossError
from trainyard.worker.reporter import Reporter
from trainyard.worker.trainer import Trainer


def _spec(toy: Path, tmp_path: Path, batch_size: int, model: str = "mlp") -> TrialSpec:
    config = parse_experiment(
        {
            "name": "inproc",
            "model": model,
            "data": {"train": str(toy / "train/*.parquet"), "val": str(toy / "val/*.parquet")},
            "hyperparameters": {"batch_size": batch_size},
            "training": {"max_length": {"batches": 2}},
        }
    )
    return TrialSpec(
        trial_id=1,
        experiment_id=1,
        trial_number=0,
        attempt=1,
        config=resolve_trial(config, {"batch_size": batch_size}),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        staging_dir=str(tmp_path / "staged"),
        heartbeat_interval_s=5.0,
    )


def test_a_batch_larger_than_the_training_set_is_refused(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Trainer(
            spec=_spec(toy, tmp_path, batch_size=128),
            reporter=Reporter(None, heartbeat_interval_s=5.0),
            world=World(),
            stop_requested=threading.Event(),
        )
    assert (
        "`hyperparameters.batch_size`: a batch of 128 is larger than the 100 training jets of "
        "data.train; lower it to at most 100"
    ) in str(caught.value)


def test_the_worker_checks_the_model_interface_on_the_staged_shapes(
    toy: Path, tmp_path: Path
) -> None:
    """A trial started without preflight (a worker of another Master version, a model file
    edited after submission) still fails with the interface message, not in the loss."""
    model = "tests.models.user_models:one_score"
    with pytest.raises(ModelError) as caught:
        Trainer(
            spec=_spec(toy, tmp_path, batch_size=10, model=model),
            reporter=Reporter(None, heartbeat_interval_s=5.0),
            world=World(),
            stop_requested=threading.Event(),
        )
    assert f"model '{model}' returned shape (3,) for a batch of 3 jets" in str(caught.value)


def test_the_guard_names_the_first_bad_batch_and_the_last_checkpoint() -> None:
    guard = NonFiniteGuard("error", device=torch.device("cpu"), world=World())
    weights = [torch.ones(3)]
    for batch, loss in enumerate([0.5, float("nan"), float("inf"), 0.4], start=1):
        assert guard.keep_update(torch.tensor(loss), batch)
    with pytest.raises(NonFiniteLossError) as caught:
        guard.check(last_checkpoint=lambda: "/c/step-00000001", parameters=weights)
    message = str(caught.value)
    assert "the loss became NaN or infinite at batch 2" in message
    assert "the last finite checkpoint is /c/step-00000001, which a retry resumes from" in message


def test_the_guard_refuses_non_finite_weights_even_with_a_finite_loss() -> None:
    guard = NonFiniteGuard("error", device=torch.device("cpu"), world=World())
    assert guard.keep_update(torch.tensor(0.3), 1)
    guard.check(last_checkpoint=lambda: None, parameters=[torch.ones(2)])
    with pytest.raises(NonFiniteLossError, match="a weight became NaN or infinite"):
        guard.check(last_checkpoint=lambda: None, parameters=[torch.tensor([1.0, float("inf")])])


def test_skip_batch_refuses_only_the_bad_update() -> None:
    guard = NonFiniteGuard("skip_batch", device=torch.device("cpu"), world=World())
    kept = [guard.keep_update(torch.tensor(v), i) for i, v in enumerate([0.1, float("nan"), 0.2])]
    assert kept == [True, False, True]
    assert guard.num_skipped == 1
    guard.check(last_checkpoint=lambda: None, parameters=[torch.ones(1)])
