"""Packed searches' shared pieces: a model slow enough to catch a pack mid-run, and each
trial's record as the packing tests read it from the store."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.integration.helpers import stored_trials
from trainyard.store import repository

SLOW_MODEL = textwrap.dedent(
    """
    import time

    from torch import nn

    from trainyard.models import build_model


    class Slow(nn.Module):
        # Sleeps in each forward: a test has time to kill the worker mid-training.
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, points, features, mask):
            time.sleep(0.05)
            return self.inner(points, features, mask)


    def slow_mlp(num_features, num_classes):
        return Slow(
            build_model(
                "mlp", num_features=num_features, num_classes=num_classes,
                options={"dropout": 0.0},
            )
        )
    """
)


@dataclass
class PackedTrial:
    number: int
    state: str
    num_restarts: int
    worker_key: int | None
    """Shared by a pack's members: the worker's pid locally, its batch job id on SLURM."""
    batches_trained: int
    log_path: str
    validations: list[int]
    """The steps of its validation reports."""


def packed_trials(home: Path) -> list[PackedTrial]:
    """The first experiment's trials under `home`, in order."""
    return stored_trials(
        home,
        lambda session, t: PackedTrial(
            number=t.number,
            state=t.state.value,
            num_restarts=t.num_restarts,
            worker_key=t.worker_key,
            batches_trained=t.batches_trained,
            log_path=t.log_path,
            validations=[
                m.batches
                for m in repository.list_metrics(session, trial_id=t.id, kind="validation")
            ],
        ),
    )
