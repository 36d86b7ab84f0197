"""A small staged set whose jets can be followed: jet i carries the value i in its first
feature, so a test can tell which jets a loader or a model saw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainyard.data.staged.dataset import StagedDataset
from trainyard.data.staged.staging import stage, staging_key


def staged_jets(root: Path, labels: Sequence[int]) -> StagedDataset:
    """Stage one jet per label, three particle slots each, all real, under ``root``."""
    num_jets = len(labels)
    features = np.zeros((num_jets, 7, 3), np.float32)
    features[:, 0, 0] = np.arange(num_jets)
    arrays = {
        "points": np.zeros((num_jets, 2, 3), np.float32),
        "features": features,
        "mask": np.ones((num_jets, 1, 3), np.float32),
        "labels": np.asarray(labels, dtype=np.int64),
    }
    return stage([arrays], root, key=staging_key([], f"jets-{list(labels)}"))
