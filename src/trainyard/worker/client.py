"""The worker's side of the Master API: the only channel between a worker and the Master.

Every call sends and receives a `trainyard.protocol` message; nothing here indexes raw JSON.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from trainyard.errors import TrainyardError
from trainyard.protocol import (
    API_PREFIX,
    MAX_MESSAGE_CHARS,
    PACK_TOKENS_ENV,
    PACK_TRIAL_IDS_ENV,
    CheckpointEntry,
    CheckpointInventory,
    Decision,
    Heartbeat,
    MetricKind,
    MetricsReport,
    OutcomeState,
    PackJoinOffer,
    PackJoinRequest,
    RocCurve,
    TrialOutcome,
    TrialSpec,
)

logger = logging.getLogger(__name__)

_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

M = TypeVar("M", bound=BaseModel)


class MasterUnreachableError(TrainyardError):
    """The Master did not answer after all retries: the worker should checkpoint and exit."""


class CredentialRefusedError(TrainyardError):
    """The Master refused this attempt's credential (it ended, or a new Master took over):
    another attempt owns the trial now, so this worker exits without writing anything."""


class MasterClient:
    """Typed calls to one trial's worker endpoints, retried across short Master outages."""

    def __init__(self, *, url: str, token: str, trial_id: int) -> None:
        self.trial_id = trial_id
        self._url = url
        self._http = httpx.Client(
            base_url=f"{url.rstrip('/')}{API_PREFIX}/trials/{trial_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    @classmethod
    def from_env(cls) -> MasterClient:
        """Built from the variables every executor sets for its workers."""
        names = ("TRAINYARD_MASTER_URL", "TRAINYARD_TOKEN", "TRAINYARD_TRIAL_ID")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise TrainyardError(
                f"{', '.join(missing)} not set: trainyard.worker is started by an executor "
                "(trainyard run), not by hand"
            )
        trial_id = os.environ["TRAINYARD_TRIAL_ID"]
        if not trial_id.isdigit():
            raise TrainyardError(f"TRAINYARD_TRIAL_ID must be a trial id, not {trial_id!r}")
        return cls(
            url=os.environ["TRAINYARD_MASTER_URL"],
            token=os.environ["TRAINYARD_TOKEN"],
            trial_id=int(trial_id),
        )

    @classmethod
    def pack_from_env(cls) -> list[MasterClient]:
        """One client per member of a packed worker, each with its trial's own credential;
        empty for a solo worker (the runner sets no pack variables for it). Call after
        `from_env`, which checks the variables every worker has."""
        ids, tokens = os.environ.get(PACK_TRIAL_IDS_ENV), os.environ.get(PACK_TOKENS_ENV)
        if not ids:
            return []
        trial_ids, credentials = ids.split(","), (tokens or "").split(",")
        if len(trial_ids) != len(credentials) or not all(i.isdigit() for i in trial_ids):
            raise TrainyardError(
                f"{PACK_TRIAL_IDS_ENV} and {PACK_TOKENS_ENV} must list as many trial ids as "
                "credentials: trainyard.worker is started by an executor (trainyard run), "
                "not by hand"
            )
        return [
            cls(url=os.environ["TRAINYARD_MASTER_URL"], token=token, trial_id=int(trial_id))
            for trial_id, token in zip(trial_ids, credentials, strict=True)
        ]

    def for_trial(self, trial_id: int, token: str) -> MasterClient:
        """A client of the same Master for another trial, with that trial's credential (a
        trial that joined this pack)."""
        return MasterClient(url=self._url, token=token, trial_id=trial_id)

    def trial_spec(self) -> TrialSpec:
        return self._parse(TrialSpec, self._call("GET", "/spec"))

    def report_metrics(
        self,
        kind: MetricKind,
        *,
        batches: int,
        epoch: float,
        values: dict[str, float],
        roc: RocCurve | None = None,
    ) -> None:
        """NaN values are left out (an undefined metric; a NaN loss never gets here)."""
        undefined = sorted(name for name, value in values.items() if math.isnan(value))
        if undefined:
            logger.warning("not reporting undefined (NaN) metric(s): %s", ", ".join(undefined))
        defined = {name: value for name, value in values.items() if not math.isnan(value)}
        self._send(
            "POST",
            "/metrics",
            MetricsReport(kind=kind, batches=batches, epoch=epoch, values=defined, roc=roc),
        )

    def sync_checkpoints(self, checkpoints: list[CheckpointEntry]) -> None:
        self._send("PUT", "/checkpoints", CheckpointInventory(checkpoints=checkpoints))

    def heartbeat(self, *, batches: int, total_batches: int | None = None) -> None:
        self._send("POST", "/heartbeat", Heartbeat(batches=batches, total_batches=total_batches))

    def decision(self) -> Decision:
        return self._parse(Decision, self._call("GET", "/decision"))

    def report_outcome(self, state: OutcomeState, message: str | None = None) -> None:
        if message is not None and len(message) > MAX_MESSAGE_CHARS:
            message = "...\n" + message[-(MAX_MESSAGE_CHARS - 4) :]
        self._send("POST", "/outcome", TrialOutcome(state=state, message=message))

    def join_pack(self, members: list[int]) -> PackJoinOffer:
        """Ask for a queued trial to fill a free place of this trial's pack (`members`: the
        trials it trains now). Not repeated blindly: a retry after a lost answer is offered
        the trial claimed for it before."""
        response = self._call(
            "POST",
            "/pack/join",
            content=PackJoinRequest(members=members).model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        return self._parse(PackJoinOffer, response)

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, message: BaseModel) -> None:
        self._call(
            method,
            path,
            content=message.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as err:
            raise TrainyardError(
                f"the Master's answer to {response.request.method} {response.request.url.path} "
                f"is not a valid {model.__name__} (is the Master another trainyard version?): "
                f"{err}"
            ) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Retry connection failures and 5xx; a refused credential or another 4xx (a bug,
        or version skew) fails at once."""
        last_error: Exception | None = None
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                response = self._http.request(method, path, **kwargs)
                if response.status_code in (401, 403):
                    raise CredentialRefusedError(
                        f"the Master refused {method} {path}: {_detail(response)}"
                    )
                if response.status_code < 500:
                    if response.is_error:
                        raise TrainyardError(
                            f"the Master refused {method} {path}: "
                            f"{response.status_code} {_detail(response)}"
                        )
                    return response
                last_error = TrainyardError(f"{response.status_code} {_detail(response)}")
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


def _detail(response: httpx.Response) -> str:
    """The `detail` of the Master's error body, or the raw text of anything else."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:500]
