"""Copies of each trial's record (hyperparameters, metrics, its end and best checkpoint) sent
to external trackers: MLflow and TensorBoard event files. The store stays the truth."""

from trainyard.tracking.dispatcher import Tracking, setup_problems
from trainyard.tracking.events import MetricsLogged, TrackingEvent, TrialEnded, TrialStarted

__all__ = [
    "MetricsLogged",
    "Tracking",
    "TrackingEvent",
    "TrialEnded",
    "TrialStarted",
    "setup_problems",
]
