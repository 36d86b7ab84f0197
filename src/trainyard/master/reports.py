"""What a worker may ask and tell the Master about its own trial, and who may do it.

Every call here is made with one trial attempt's credential (`authenticate`), and touches only
that trial: the spec it trains, the metrics, checkpoints and heartbeats it reports, the
searcher's decision and its outcome. Reports are idempotent where a worker may repeat them
after a Master restart (a validation resent at the same step, the checkpoint inventory).
"""

from __future__ import annotations

import logging

from trainyard.errors import AuthenticationError, PermissionDeniedError
from trainyard.master.service import WORKER_TOKEN_PREFIX, MasterService, token_sha256
from trainyard.protocol import (
    CheckpointInventory,
    Decision,
    DecisionAction,
    ExperimentState,
    Heartbeat,
    MetricKind,
    MetricsReport,
    OutcomeState,
    TrialOutcome,
    TrialSpec,
)
from trainyard.store import WorkerCredential, repository
from trainyard.store.curves import fold_validation
from trainyard.store.rocs import add_validation_roc
from trainyard.tracking import MetricsLogged

logger = logging.getLogger(__name__)


class TrialReports:
    """The worker endpoints' logic over the Master's service."""

    def __init__(self, service: MasterService) -> None:
        self._service = service
        self._store = service.store

    def authenticate(self, token: str, trial_id: int) -> int:
        """The attempt number of a live credential of `trial_id`.

        Raises:
            AuthenticationError: the token was never issued, or its attempt has ended.
            PermissionDeniedError: the token belongs to another trial.
        """
        with self._store.session() as session:
            credential = repository.find_worker_credential(
                session, token_sha256=token_sha256(token)
            )
            if credential is None:
                raise AuthenticationError(_unknown_token_message(token))
            if credential.trial_id != trial_id:
                raise PermissionDeniedError(
                    f"this worker credential belongs to trial {credential.trial_id} "
                    f"(attempt {credential.attempt}); it reaches only that trial's worker "
                    f"endpoints, not trial {trial_id}'s"
                )
            if credential.revoked_at is not None:
                raise AuthenticationError(_ended_message(credential))
            return credential.attempt

    def trial_spec(self, trial_id: int, *, attempt: int) -> TrialSpec:
        config = self._service.trial_config(trial_id)
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            return TrialSpec(
                trial_id=trial.id,
                experiment_id=trial.experiment_id,
                trial_number=trial.number,
                attempt=attempt,
                config=config,
                checkpoint_dir=str(self._service.trial_dir(session, trial) / "checkpoints"),
                staging_dir=str(self._service.settings.staging_dir()),
                heartbeat_interval_s=self._service.settings.heartbeat_interval_s,
            )

    def report_metrics(self, trial_id: int, report: MetricsReport) -> None:
        """Store a report; a validation already stored at that step is not stored twice (a
        resumed worker resends its last one, in case the Master never received it)."""
        with self._store.session() as session:
            if report.kind is MetricKind.VALIDATION:
                latest = repository.latest_metrics(
                    session, trial_id=trial_id, kind=MetricKind.VALIDATION
                )
                if latest is not None and latest.batches == report.batches:
                    return
            stored = repository.add_metrics(
                session,
                trial_id=trial_id,
                kind=report.kind,
                batches=report.batches,
                epoch=report.epoch,
                values=dict(report.values),
            )
            if report.kind is MetricKind.VALIDATION:
                fold_validation(
                    session, trial_id=trial_id, batches=report.batches, values=report.values
                )
            if report.roc is not None:
                add_validation_roc(session, metric_id=stored.id, roc=report.roc)
            repository.update_trial(session, trial_id=trial_id, batches_trained=report.batches)
            trial = repository.get_trial(session, trial_id)
            experiment_id, number = trial.experiment_id, trial.number
        self._service.track(
            MetricsLogged(
                experiment_id=experiment_id,
                trial_id=trial_id,
                trial_number=number,
                kind=report.kind,
                batches=report.batches,
                values=dict(report.values),
            )
        )

    def sync_checkpoints(self, trial_id: int, inventory: CheckpointInventory) -> None:
        """Make the store's active checkpoints exactly the worker's folders on disk."""
        with self._store.session() as session:
            repository.replace_checkpoints(
                session, trial_id=trial_id, present=inventory.checkpoints
            )

    def heartbeat(self, trial_id: int, beat: Heartbeat) -> None:
        with self._store.session() as session:
            repository.record_heartbeat(session, trial_id=trial_id)
            fields: dict[str, int] = {"batches_trained": beat.batches}
            if beat.total_batches is not None:
                fields["total_batches"] = beat.total_batches
            repository.update_trial(session, trial_id=trial_id, **fields)

    def decide(self, trial_id: int) -> Decision:
        """Stop when the experiment was paused or killed, else ask the searcher."""
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            experiment = repository.get_experiment(session, trial.experiment_id)
            latest = repository.latest_metrics(
                session, trial_id=trial_id, kind=MetricKind.VALIDATION
            )
            searcher_trial_id, experiment_state = trial.searcher_trial_id, experiment.state
            experiment_id = trial.experiment_id
        if experiment_state is not ExperimentState.RUNNING:
            return Decision(
                action=DecisionAction.STOP, reason=f"experiment is {experiment_state.value}"
            )
        if latest is None:
            return Decision(action=DecisionAction.CONTINUE)
        decision = self._service.searcher(experiment_id).on_validation(
            searcher_trial_id=searcher_trial_id, batches=latest.batches, metrics=latest.values
        )
        return Decision(action=DecisionAction(decision.action), reason=decision.reason)

    def finish_trial(self, trial_id: int, outcome: TrialOutcome) -> None:
        """Record the worker's own account of how it ended; the first final word wins, and
        the attempt's credential dies with it.

        Completed and early-stopped trials are told to the searcher now; an errored one only
        once the runner has given up retrying it (`MasterService.fail_or_retry`).
        """
        with self._store.session() as session:
            trial = repository.get_trial(session, trial_id)
            repository.revoke_worker_credentials(session, trial_id=trial_id)
            if trial.state.is_finished():
                return
            repository.update_trial(
                session,
                trial_id=trial_id,
                state=outcome.state.trial_state(),
                error=outcome.message,
            )
        logger.info("trial %d reported %s", trial_id, outcome.state.value)
        if outcome.state is OutcomeState.COMPLETED:
            self._service.tell_searcher(trial_id, "completed")
        elif outcome.state is OutcomeState.STOPPED:
            self._service.tell_searcher(trial_id, "stopped")


def _unknown_token_message(token: str) -> str:
    if token.startswith(WORKER_TOKEN_PREFIX):
        return (
            "this worker credential was never issued by this Master (a worker of another "
            "Master, or a mistyped token); workers get theirs from the executor that starts them"
        )
    return (
        "worker endpoints take the credential of the trial's running attempt "
        f"({WORKER_TOKEN_PREFIX}...), which the executor puts in the worker's TRAINYARD_TOKEN"
    )


def _ended_message(credential: WorkerCredential) -> str:
    ended = credential.revoked_at.isoformat(timespec="seconds") if credential.revoked_at else "-"
    return (
        f"this worker credential was for attempt {credential.attempt} of trial "
        f"{credential.trial_id}, which ended at {ended}; each attempt gets its own credential, "
        "so a worker left over from an earlier attempt must exit"
    )
