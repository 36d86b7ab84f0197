"""The experiment file's `tracking` section: copies of each trial's record sent to MLflow and
written as TensorBoard event files. trainyard's store stays the truth; these are views."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from trainyard.config._strict import SECRET_VALUE_ERROR, Strict

MLFLOW_SCHEMES = ("file", "sqlite", "http", "https")
"""Tracking URIs trainyard sends to: MLflow's file and SQLite stores and a tracking server."""


class MlflowSpec(Strict):
    """Where an experiment's trials go in MLflow: one MLflow run per trial."""

    uri: str = Field(min_length=1)
    """A folder (MLflow's file store), file:///folder, sqlite:///file.db, or the URL of an
    MLflow tracking server (http:// or https://)."""
    experiment: str | None = Field(default=None, min_length=1)
    """The MLflow experiment's name; the trainyard experiment's name if unset."""
    log_checkpoint: bool = True
    """Upload the trial's best checkpoint (the one at its best validation, if still on disk,
    else its latest) as the run's `checkpoint` artifacts when the trial ends."""

    @field_validator("uri")
    @classmethod
    def _known_scheme_without_secrets(cls, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.username or parts.password:
            raise PydanticCustomError(
                SECRET_VALUE_ERROR,
                "the MLflow URI holds a user name or password; experiment files are stored "
                "and shown, so give credentials in the Master's environment instead "
                "(MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD)",
            )
        if parts.scheme and parts.scheme not in MLFLOW_SCHEMES and len(parts.scheme) > 1:
            raise ValueError(
                f"unsupported MLflow URI scheme '{parts.scheme}:' in {uri!r}; use a folder, "
                "file:///folder, sqlite:///file.db, or http(s)://host:port of a tracking server"
            )
        return uri

    def is_local_path(self) -> bool:
        """A plain folder (or a Windows-style drive path), not a URI."""
        scheme = urlsplit(self.uri).scheme
        return not scheme or len(scheme) == 1


class TensorBoardSpec(Strict):
    """Where TensorBoard event files are written: DIR/<experiment>-<id>/trial-<trial id>/."""

    dir: str = Field(min_length=1)


class TrackingSpec(Strict):
    """Trackers that get a copy of every trial's hyperparameters, metrics and end."""

    mlflow: MlflowSpec | None = None
    tensorboard: TensorBoardSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """`mlflow: URI` is short for `mlflow: {uri: URI}`, `tensorboard: DIR` for
        `tensorboard: {dir: DIR}`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("mlflow"), str):
            data["mlflow"] = {"uri": data["mlflow"]}
        if isinstance(data.get("tensorboard"), str):
            data["tensorboard"] = {"dir": data["tensorboard"]}
        return data
