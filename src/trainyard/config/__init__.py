"""The experiment file: schema, loading and error messages. Parsed once, here only."""

from trainyard.config.loader import load_experiment, parse_experiment, resolve_paths
from trainyard.config.schema import (
    CheckpointSpec,
    DataSpec,
    ExperimentConfig,
    Length,
    ModelSpec,
    SearcherName,
    TrainingSpec,
)

__all__ = [
    "CheckpointSpec",
    "DataSpec",
    "ExperimentConfig",
    "Length",
    "ModelSpec",
    "SearcherName",
    "TrainingSpec",
    "load_experiment",
    "parse_experiment",
    "resolve_paths",
]
