"""Rank 0's channel to the Master: metrics, heartbeats, checkpoints and the continue/stop ask.

Other ranks get a Reporter without a client, which stays silent, so the loop calls it the same
way on every rank. A Master that stops answering, or that refuses this attempt's credential,
does not raise here: `gone` or `superseded` is set, and the loop shares it with every rank at
the next step, so that all of them act together (checkpoint and exit when the Master is gone;
exit without writing when another attempt owns the trial).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from trainyard.protocol import CheckpointEntry, Decision, DecisionAction, MetricKind, RocCurve
from trainyard.worker.client import CredentialRefusedError, MasterClient, MasterUnreachableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CONTINUE = Decision(action=DecisionAction.CONTINUE)


class Reporter:
    """Calls the Master when this is rank 0 and the Master still answers; no-ops otherwise."""

    def __init__(self, client: MasterClient | None, *, heartbeat_interval_s: float) -> None:
        self._client = client
        self._heartbeat_interval_s = heartbeat_interval_s
        self._last_beat = 0.0
        self.gone: MasterUnreachableError | None = None
        """Set when the Master did not answer after all retries."""
        self.superseded: CredentialRefusedError | None = None
        """Set when the Master refused this attempt's credential."""

    def metrics(
        self,
        kind: MetricKind,
        *,
        batches: int,
        epoch: float,
        values: dict[str, float],
        roc: RocCurve | None = None,
    ) -> None:
        self._call(
            lambda c: c.report_metrics(kind, batches=batches, epoch=epoch, values=values, roc=roc),
            None,
        )

    def checkpoints(self, present: list[CheckpointEntry]) -> None:
        """Every checkpoint on disk, so the store lists exactly those."""
        self._call(lambda c: c.sync_checkpoints(present), None)

    def heartbeat(
        self, *, batches: int, total_batches: int | None = None, now: bool = False
    ) -> None:
        """Beat from the loop itself, so a hung step falls silent and the Master notices;
        at most once per interval unless `now`."""
        clock = time.monotonic()
        if not now and clock - self._last_beat < self._heartbeat_interval_s:
            return
        self._call(lambda c: c.heartbeat(batches=batches, total_batches=total_batches), None)
        self._last_beat = clock

    def decision(self) -> Decision:
        """The searcher's (or a pause's) decision; "continue" where nobody can be asked."""
        return self._call(lambda c: c.decision(), _CONTINUE)

    def _call(self, call: Callable[[MasterClient], T], default: T) -> T:
        if self._client is None or self.gone is not None or self.superseded is not None:
            return default
        try:
            return call(self._client)
        except MasterUnreachableError as err:
            logger.error("%s; every rank will checkpoint and exit", err)
            self.gone = err
        except CredentialRefusedError as err:
            logger.error("%s; every rank will exit without writing", err)
            self.superseded = err
        return default
