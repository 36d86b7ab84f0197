"""Rank 0's channel to the Master: metrics, heartbeats, checkpoints and the continue/stop ask.

Other ranks get a Reporter without a client, which stays silent, so the loop calls it the same
way on every rank. A Master that stops answering does not raise here: `gone` is set, and the
loop shares it with every rank at the next step so that all of them checkpoint together (a
sharded checkpoint needs every rank) before exiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from trainyard.worker.client import MasterClient, MasterUnreachableError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Reporter:
    """Calls the Master when this is rank 0 and the Master still answers; no-ops otherwise."""

    def __init__(self, client: MasterClient | None, *, heartbeat_interval_s: float) -> None:
        self._client = client
        self._heartbeat_interval_s = heartbeat_interval_s
        self._last_beat = 0.0
        self.gone: MasterUnreachableError | None = None
        """Set when the Master did not answer after all retries."""

    def metrics(self, kind: str, *, batches: int, epoch: float, values: dict[str, float]) -> None:
        self._call(
            lambda c: c.report_metrics(kind, batches=batches, epoch=epoch, values=values), None
        )

    def checkpoint(self, *, batches: int, path: str, info: dict[str, Any]) -> None:
        self._call(lambda c: c.register_checkpoint(batches=batches, path=path, info=info), None)

    def heartbeat(self, *, batches: int, total_batches: int | None = None) -> None:
        """Beat from the loop itself, so a hung step falls silent and the Master notices."""
        now = time.monotonic()
        if now - self._last_beat < self._heartbeat_interval_s:
            return
        self._call(lambda c: c.heartbeat(batches=batches, total_batches=total_batches), None)
        self._last_beat = now

    def should_stop(self) -> tuple[bool, str]:
        """The searcher's (or a pause's) decision; "continue" where nobody can be asked."""
        return self._call(lambda c: c.should_stop(), (False, ""))

    def _call(self, call: Callable[[MasterClient], T], default: T) -> T:
        if self._client is None or self.gone is not None:
            return default
        try:
            return call(self._client)
        except MasterUnreachableError as err:
            logger.error("%s; every rank will checkpoint and exit", err)
            self.gone = err
            return default
