"""The worker's side of the Master API: the only channel between a worker and the Master."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import httpx

from trainyard.errors import TrainyardError

logger = logging.getLogger(__name__)

_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


class MasterUnreachableError(TrainyardError):
    """The Master did not answer after all retries: the worker should checkpoint and exit."""


class MasterClient:
    """Typed calls to the trial endpoints, retried across short Master outages."""

    def __init__(self, *, url: str, token: str, trial_id: int) -> None:
        self.trial_id = trial_id
        self._http = httpx.Client(
            base_url=f"{url.rstrip('/')}/api/v1/trials/{trial_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    @classmethod
    def from_env(cls) -> MasterClient:
        """Built from the variables every executor sets for its workers."""
        missing = [
            name
            for name in ("TRAINYARD_MASTER_URL", "TRAINYARD_TOKEN", "TRAINYARD_TRIAL_ID")
            if not os.environ.get(name)
        ]
        if missing:
            raise TrainyardError(
                f"{', '.join(missing)} not set: trainyard.worker is started by an executor "
                "(trainyard run), not by hand"
            )
        return cls(
            url=os.environ["TRAINYARD_MASTER_URL"],
            token=os.environ["TRAINYARD_TOKEN"],
            trial_id=int(os.environ["TRAINYARD_TRIAL_ID"]),
        )

    def trial_spec(self) -> dict[str, Any]:
        return self._call("GET", "/spec").json()

    def report_metrics(
        self, kind: str, *, batches: int, epoch: float, values: dict[str, float]
    ) -> None:
        # JSON has no inf/nan (a perfect rejection is inf): send those as strings, which the
        # Master's float fields parse back.
        safe = {k: v if math.isfinite(v) else str(v) for k, v in values.items()}
        body = {"kind": kind, "batches": batches, "epoch": epoch, "values": safe}
        self._call("POST", "/metrics", json=body)

    def register_checkpoint(self, *, batches: int, path: str, info: dict[str, Any]) -> None:
        self._call("POST", "/checkpoints", json={"batches": batches, "path": path, "info": info})

    def heartbeat(self, *, batches: int, total_batches: int | None = None) -> None:
        self._call("POST", "/heartbeat", json={"batches": batches, "total_batches": total_batches})

    def should_stop(self) -> tuple[bool, str]:
        answer = self._call("GET", "/decision").json()
        return answer["action"] == "stop", answer.get("reason", "")

    def report_outcome(self, state: str, message: str | None = None) -> None:
        self._call("POST", "/outcome", json={"state": state, "message": message})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Retry connection failures and 5xx; a 4xx is a bug or a bad token and fails at once."""
        last_error: Exception | None = None
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                response = self._http.request(method, path, **kwargs)
                if response.status_code < 500:
                    if response.is_error:
                        raise TrainyardError(
                            f"Master refused {method} {path}: "
                            f"{response.status_code} {response.text}"
                        )
                    return response
                last_error = TrainyardError(f"{response.status_code} {response.text}")
            except httpx.TransportError as err:
                last_error = err
            if delay is None:
                break
            logger.warning(
                "Master call %s %s failed (%s); retrying in %.1f s",
                method,
                path,
                last_error,
                delay,
            )
            time.sleep(delay)
        raise MasterUnreachableError(
            f"the Master at {self._http.base_url} did not answer {method} {path}: {last_error}"
        )
