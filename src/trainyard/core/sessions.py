"""Where a script's reports go: the Master of its trial, or files of a local run.

`MasterSession` speaks the typed protocol (`trainyard.protocol`) through the worker's HTTP
client (`worker/client.py`, torch-free); `LocalSession` is used when no trial is in the
environment (a script run by hand) and writes metrics as JSON lines. The context
(`core/context.py`) calls either the same way.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainyard.config.trial import ScriptTrialConfig
from trainyard.errors import TrainyardError
from trainyard.protocol import (
    CheckpointEntry,
    Decision,
    DecisionAction,
    MetricKind,
    OutcomeState,
    TrialSpec,
)
from trainyard.worker.client import MasterClient

logger = logging.getLogger("trainyard.core")

TRIAL_ENV = "TRAINYARD_TRIAL_ID"
"""Set by every executor: its presence means the script runs as a trial."""
_CONTINUE = Decision(action=DecisionAction.CONTINUE)


class MasterSession:
    """One script trial's calls to its Master, with the attempt's credential."""

    def __init__(self, client: MasterClient, spec: TrialSpec) -> None:
        if not isinstance(spec.config, ScriptTrialConfig):
            raise TrainyardError(
                f"trial {spec.trial_id} trains a built-in model, not a script; "
                "trainyard.core is for experiments with an `entrypoint`"
            )
        self._client = client
        self.spec = spec
        self.config: ScriptTrialConfig = spec.config
        self._last_beat = 0.0

    @classmethod
    def from_env(cls) -> MasterSession:
        """The session of the trial the executor named in this process's environment.

        Raises:
            CredentialRefusedError: the Master refused TRAINYARD_TOKEN for this trial (another
                trial's credential, or an attempt that has ended).
            MasterUnreachableError: the Master did not answer.
        """
        client = MasterClient.from_env()
        try:
            return cls(client, client.trial_spec())
        except BaseException:
            client.close()
            raise

    @property
    def hyperparameters(self) -> Mapping[str, Any]:
        return self.config.hyperparameters

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.spec.checkpoint_dir)

    @property
    def keep(self) -> int:
        return self.config.checkpoint.keep

    @property
    def searcher_metric(self) -> str | None:
        return self.config.searcher_metric

    def report(
        self, kind: MetricKind, step: int, values: dict[str, float], epoch: float | None
    ) -> None:
        self._client.report_metrics(kind, batches=step, epoch=epoch or 0.0, values=values)
        self.heartbeat(step, now=True)

    def heartbeat(self, step: int, *, now: bool = False) -> None:
        """Proof of life, at most once per the Master's interval unless `now`."""
        clock = time.monotonic()
        if now or clock - self._last_beat >= self.spec.heartbeat_interval_s:
            self._client.heartbeat(batches=step)
            self._last_beat = clock

    def sync_checkpoints(self, entries: list[CheckpointEntry]) -> None:
        self._client.sync_checkpoints(entries)

    def decision(self) -> Decision:
        return self._client.decision()

    def outcome(self, state: OutcomeState, message: str | None) -> None:
        self._client.report_outcome(state, message)

    def close(self) -> None:
        self._client.close()


class LocalSession:
    """A script run by hand: hyperparameters from its defaults, metrics appended to
    `<local_dir>/metrics.jsonl`, checkpoints in `<local_dir>/checkpoints`."""

    def __init__(self, local_dir: Path, hyperparameters: Mapping[str, Any]) -> None:
        self.local_dir = local_dir
        self.hyperparameters = dict(hyperparameters)
        self.metrics_file = local_dir / "metrics.jsonl"
        self.checkpoint_dir = local_dir / "checkpoints"
        self.keep = 2
        self.searcher_metric: str | None = None

    def report(
        self, kind: MetricKind, step: int, values: dict[str, float], epoch: float | None
    ) -> None:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "kind": kind.value,
            "step": step,
            **({} if epoch is None else {"epoch": epoch}),
            "values": values,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self.metrics_file.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def heartbeat(self, step: int, *, now: bool = False) -> None:
        return None

    def sync_checkpoints(self, entries: list[CheckpointEntry]) -> None:
        return None

    def decision(self) -> Decision:
        return _CONTINUE

    def outcome(self, state: OutcomeState, message: str | None) -> None:
        logger.info("local run %s%s", state.value, f": {message}" if message else "")

    def close(self) -> None:
        return None


def in_trial() -> bool:
    """Whether an executor started this process as a trial."""
    return bool(os.environ.get(TRIAL_ENV))
