"""The context a script trial works in: `with trainyard.core.init() as ctx:`.

The chief rank (RANK 0) reports metrics, registers checkpoints, asks the searcher whether to
go on and reports how the trial ended. Other ranks read the same hyperparameters and
checkpoints; their reports are no-ops, and `should_stop` gives them the chief's answer when
the script has started a torch.distributed process group (else only their own stop signal).
Leaving the `with` block reports the outcome: completed; stopped (the searcher said stop);
paused (SIGTERM, a preemption: resumable); or errored, with the exception, which is re-raised
so the script exits non-zero.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, MappingProxyType, TracebackType
from typing import Any

from trainyard.core.checkpoints import CheckpointStore
from trainyard.core.distributed import DistributedInfo, agree_any
from trainyard.core.sessions import LocalSession, MasterSession, in_trial
from trainyard.errors import TrainyardError
from trainyard.protocol import DecisionAction, MetricKind, OutcomeState
from trainyard.worker.client import CredentialRefusedError, MasterUnreachableError
from trainyard.worker.lifetime import die_with_agent

logger = logging.getLogger("trainyard.core")

DEFAULT_LOCAL_DIR = "trainyard-local"


def init(
    *, hparams: Mapping[str, Any] | None = None, local_dir: str | Path = DEFAULT_LOCAL_DIR
) -> Context:
    """The context of this trial, or of a local run when no trial is in the environment.

    Args:
        hparams: default hyperparameters; a trial's values (the searcher's) replace them. A
            local run uses these alone.
        local_dir: where a local run writes metrics.jsonl and checkpoints/.

    Raises:
        CredentialRefusedError: the Master refused this process's credential (it belongs to
            another trial, or its attempt has ended).
        MasterUnreachableError: the Master named in the environment did not answer.
    """
    info = DistributedInfo.from_env()
    session: MasterSession | LocalSession
    if in_trial():
        if info.size > 1:
            die_with_agent()  # torchrun starts ranks in their own sessions (worker/lifetime.py)
        session = MasterSession.from_env()
    else:
        session = LocalSession(Path(local_dir), hparams or {})
    return Context(session, info, {**(hparams or {}), **session.hyperparameters})


class Context:
    """What a script uses: hyperparameters, ranks, reports, checkpoints and should_stop."""

    def __init__(
        self,
        session: MasterSession | LocalSession,
        distributed: DistributedInfo,
        hyperparameters: Mapping[str, Any],
    ) -> None:
        self._session = session
        self.distributed = distributed
        self.hparams: Mapping[str, Any] = MappingProxyType(dict(hyperparameters))
        """The trial's hyperparameters, as the experiment file or the searcher gave them."""
        self.checkpoint = CheckpointStore(
            session.checkpoint_dir,
            keep=session.keep,
            is_chief=distributed.is_chief,
            on_change=self._checkpoints_changed,
        )
        self.output_dir = Path(session.checkpoint_dir).parent
        """A folder of this trial (of the local run by hand) for the script's own files: its
        logger's output, plots. It holds `checkpoint.directory`; it is not cleaned up."""
        self.is_local = isinstance(session, LocalSession)
        """True for a run by hand (no trial in the environment)."""
        self._signalled = threading.Event()
        self._previous_handler: Any = None
        self._stop: OutcomeState | None = None
        self._step = 0
        self._validated_with_metric = False
        self._new_validation = False
        self._last_ask = 0.0

    # -- reports -------------------------------------------------------------------------------

    def report_training(
        self, step: int, metrics: Mapping[str, float], *, epoch: float | None = None
    ) -> None:
        """Training metrics at `step` (the script's own count: batches, or epochs), and the
        epoch it is in, if the script counts them (stored and shown beside the step)."""
        self._report(MetricKind.TRAINING, step, metrics, epoch)

    def report_validation(
        self, step: int, metrics: Mapping[str, float], *, epoch: float | None = None
    ) -> None:
        """Validation metrics at `step`; the searcher ranks (and ASHA stops) trials by its
        `searcher.metric`, which must be among them.

        Raises:
            TrainyardError: the searcher's metric is missing (after the report was sent).
        """
        self._report(MetricKind.VALIDATION, step, metrics, epoch)
        if not self.distributed.is_chief:
            return
        self._new_validation = True
        wanted = self._session.searcher_metric
        if wanted is None or wanted in metrics:
            self._validated_with_metric = True
            return
        raise TrainyardError(_missing_metric(wanted, step, sorted(metrics)))

    def _report(
        self, kind: MetricKind, step: int, metrics: Mapping[str, float], epoch: float | None
    ) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TrainyardError(
                f"report_{kind.value}: step must be a whole number >= 0, not {step!r}"
            )
        if epoch is not None and (isinstance(epoch, bool) or not epoch >= 0):
            raise TrainyardError(
                f"report_{kind.value}: epoch must be a number >= 0, not {epoch!r}"
            )
        self._step = step
        if self.distributed.is_chief:
            values = {name: float(value) for name, value in metrics.items()}
            self._session.report(kind, step, values, None if epoch is None else float(epoch))

    def _checkpoints_changed(self, entries: list[Any]) -> None:
        self._session.sync_checkpoints(entries)

    # -- stopping ------------------------------------------------------------------------------

    def should_stop(self) -> bool:
        """Whether to checkpoint and leave now: the searcher stopped the trial (ASHA), the
        experiment was paused or killed, or this process got SIGTERM (a preemption, Ctrl-C
        of `trainyard run`). With a process group, a collective: call it on every rank at the
        same points, and every rank gets the same answer."""
        if self._stop is None:
            if self._signalled.is_set():
                self._stop = OutcomeState.PAUSED
            elif self.distributed.is_chief and self._ask_due():
                decision = self._session.decision()
                self._last_ask, self._new_validation = time.monotonic(), False
                if decision.action is DecisionAction.STOP:
                    logger.warning(
                        "trainyard: stopping at step %d: %s", self._step, decision.reason
                    )
                    self._stop = OutcomeState.STOPPED
        if self.distributed.is_chief:
            self._session.heartbeat(self._step)
        stop = agree_any(self._stop is not None, self.distributed)
        if stop and self._stop is None:
            self._stop = OutcomeState.STOPPED  # another rank's answer
        return stop

    def _ask_due(self) -> bool:
        """After each validation (the searcher's rungs), else now and then (pause, kill)."""
        if isinstance(self._session, LocalSession):
            return False
        interval = self._session.spec.heartbeat_interval_s
        return self._new_validation or time.monotonic() - self._last_ask >= interval

    # -- the with block ------------------------------------------------------------------------

    def __enter__(self) -> Context:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.distributed.is_chief:
            self._session.heartbeat(0, now=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            if self.distributed.is_chief and not isinstance(
                error, MasterUnreachableError | CredentialRefusedError
            ):
                self._report_outcome(error)
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)
            self._session.close()

    def _report_outcome(self, error: BaseException | None) -> None:
        if isinstance(error, SystemExit) and error.code in (0, None):
            error = None  # sys.exit() inside the block: a normal end
        if isinstance(error, SystemExit):
            message = f"the script called sys.exit({error.code!r}) inside trainyard.core.init()"
            self._session.outcome(OutcomeState.ERRORED, message)
            return
        if error is not None:
            message = (
                str(error)
                if isinstance(error, TrainyardError)
                else "".join(traceback.format_exception(error))
            )
            self._session.outcome(OutcomeState.ERRORED, f"{type(error).__name__}: {message}")
            return
        wanted = self._session.searcher_metric
        if self._stop is None and wanted is not None and not self._validated_with_metric:
            self._session.outcome(OutcomeState.ERRORED, _never_reported(wanted))
            return
        self._session.outcome(self._stop or OutcomeState.COMPLETED, None)

    def _on_sigterm(self, signum: int, _frame: FrameType | None) -> None:
        logger.warning(
            "trainyard: received %s; should_stop() is now true", signal.Signals(signum).name
        )
        self._signalled.set()


def _missing_metric(wanted: str, step: int, reported: list[str]) -> str:
    return (
        f"the searcher ranks trials by `searcher.metric` {wanted!r}, but the validation at "
        f"step {step} reported only {', '.join(reported) or 'nothing'}; pass {wanted!r} to "
        "ctx.report_validation, or set `searcher.metric` to one of the reported names"
    )


def _never_reported(wanted: str) -> str:
    return (
        f"the script ended without reporting `searcher.metric` {wanted!r} in any "
        "ctx.report_validation, so the searcher cannot rank this trial; report it after each "
        "validation"
    )
