"""Joins: a running pack with a free place takes the experiment's next queued trial.

A packed worker whose member left (stopped by the searcher, completed, errored) asks, between
two steps and with one member's own credential, for another trial (`PackJoinRequest`). The
Master claims the lowest-numbered queued trial with a conditional update (store/claims.py):
QUEUED -> RUNNING under the pack's worker key (`Executor.worker_key`), only while
still queued (so the runner does not launch it too) and while the experiment's
`max_concurrent_trials` and the project's trial quotas have room (a join takes no slot: the
pack's worker already holds one, so slot quotas and the fair share do not change). The
answer carries the trial's spec and a fresh attempt credential. Every trial of a packed
experiment fits the pack: the config refuses a pack whose search varies a shape-changing
hyperparameter (`trainyard.config.packing`).

The runner learns a joined member from the store (RUNNING under its pack's worker key) and
watches, pauses and reaps it with the pack (master/runner.py); if the worker dies between claim and
join, the reaping retries the claimed trial from its own checkpoint like any member.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.auth.api_tokens import token_sha256
from trainyard.config import ExperimentConfig
from trainyard.config.packing import most_auto_pack_size
from trainyard.errors import PermissionDeniedError
from trainyard.master.reports import TrialReports
from trainyard.master.service import MasterService
from trainyard.protocol import (
    ExperimentState,
    PackJoinOffer,
    PackJoinRequest,
    TrialState,
)
from trainyard.store import Trial, repository
from trainyard.store.claims import (
    TrialLimit,
    claim_queued_trial,
    project_trial_limits,
    reached_limit,
)

logger = logging.getLogger(__name__)


class PackJoins:
    """The Master's side of joins: who may claim, and which trial they get."""

    def __init__(self, service: MasterService, reports: TrialReports) -> None:
        self._service = service
        self._store = service.store
        self._reports = reports

    def claim(self, caller_id: int, request: PackJoinRequest) -> PackJoinOffer:
        """A queued trial for the pack of `caller_id` (authenticated by its live credential),
        or none with the reason.

        Raises:
            PermissionDeniedError: the experiment does not pack, the caller is not running
                in a pack, or `members` names a trial that is not this pack's.
        """
        with self._store.session() as session:
            caller = repository.get_trial(session, caller_id)
            experiment_id, key = caller.experiment_id, caller.worker_key
            experiment = repository.get_experiment(session, experiment_id)
            experiment_state = experiment.state
        config = self._service.experiment_config(experiment_id)
        pack = config.resources.pack
        size = _most_members(config)
        if size == 1:
            model = config.model.name if config.model else "a script"
            never = f", which packs {model} on no device" if pack == "auto" else ""
            raise PermissionDeniedError(
                f"trial {caller_id}'s experiment {config.name!r} does not pack trials "
                f"(`resources.pack: {pack}`{never}); only a packed worker may take queued "
                "trials"
            )
        with self._store.session() as session:
            in_pack = self._pack_of(session, caller_id, experiment_id, key, request)
            if experiment_state is not ExperimentState.RUNNING:
                return PackJoinOffer(reason=f"experiment is {experiment_state.value}")
            if len(in_pack) >= size:
                return PackJoinOffer(reason=f"the pack is full ({size} trials)")
            lost = sorted(set(in_pack) - set(request.members))
        if lost:  # claimed for this pack before, but the answer never reached it
            logger.info("trial %d: offered again to the pack of trial %d", lost[0], caller_id)
            return self._offer(lost[0], caller_id)
        limits = self._limits(experiment_id, config.resources.max_concurrent_trials)
        while True:
            with self._store.session() as session:
                queued = session.scalar(
                    select(Trial.id)
                    .where(Trial.experiment_id == experiment_id, Trial.state == TrialState.QUEUED)
                    .order_by(Trial.number)
                    .limit(1)
                )
                if queued is None:
                    return PackJoinOffer(reason="no trial of the experiment is queued")
                if claim_queued_trial(
                    session,
                    experiment_id=experiment_id,
                    trial_id=queued,
                    limits=limits,
                    worker_key=key,
                ):
                    break
                full = reached_limit(session, limits)
            if full is not None:
                return PackJoinOffer(
                    reason=f"{full.name} is reached ({full.limit} running trials)"
                )
            # Else another party claimed that trial first: try the next one.
        logger.info("trial %d joins the pack of trial %d (worker key %s)", queued, caller_id, key)
        return self._offer(queued, caller_id)

    def _pack_of(
        self,
        session: Session,
        caller_id: int,
        experiment_id: int,
        key: int | None,
        request: PackJoinRequest,
    ) -> list[int]:
        """The trials RUNNING in the caller's pack (its worker's key), after checking that
        the caller runs in one and that `members` are all of them."""
        if key is None or caller_id not in request.members:
            raise PermissionDeniedError(
                f"trial {caller_id} is not running in a pack that lists it among its members; "
                "only a packed worker asks for trials, with one of its members' credentials"
            )
        in_pack = list(
            session.scalars(
                select(Trial.id).where(
                    Trial.experiment_id == experiment_id,
                    Trial.state == TrialState.RUNNING,
                    Trial.worker_key == key,
                )
            )
        )
        strangers = sorted(set(request.members) - set(in_pack))
        if strangers:
            raise PermissionDeniedError(
                f"trial(s) {', '.join(map(str, strangers))} are not running in the pack of "
                f"trial {caller_id}; a pack takes trials only for itself"
            )
        return in_pack

    def _limits(self, experiment_id: int, max_concurrent_trials: int) -> list[TrialLimit]:
        with self._store.session() as session:
            project = project_trial_limits(session, experiment_id=experiment_id)
        own = TrialLimit(
            "the experiment's resources.max_concurrent_trials",
            max_concurrent_trials,
            (experiment_id,),
        )
        return [own, *project]

    def _offer(self, trial_id: int, caller_id: int) -> PackJoinOffer:
        """The claimed trial with a fresh attempt credential (any earlier one dies)."""
        token = self._service.issue_worker_token(trial_id)
        with self._store.session() as session:
            credential = repository.find_worker_credential(
                session, token_sha256=token_sha256(token)
            )
            assert credential is not None, "just issued"
            attempt = credential.attempt
        spec = self._reports.trial_spec(trial_id, attempt=attempt)
        return PackJoinOffer(trial_id=trial_id, spec=spec, token=token)


def _most_members(config: ExperimentConfig) -> int:
    """The most trials one worker of the experiment trains: `resources.pack: K`, 1 for off;
    for auto, the largest pack auto picks for its model on any device (the runner's choice
    for its pool is not in the store), 1 where auto never packs the model, so that a solo
    worker of such an experiment cannot gather a pack."""
    pack = config.resources.pack
    if isinstance(pack, int):
        return pack
    if pack == "auto":
        return most_auto_pack_size(config.model.name if config.model else None)
    return 1


def claim_for_launch(
    service: MasterService,
    *,
    experiment_id: int,
    trial_ids: list[int],
    max_concurrent_trials: int,
) -> set[int]:
    """The runner's side: those of `trial_ids` it may launch, claimed QUEUED -> RUNNING (no
    worker key yet) unless a pack took one first or the experiment is at its limit."""
    limit = TrialLimit(
        "the experiment's resources.max_concurrent_trials", max_concurrent_trials, (experiment_id,)
    )
    claimed = set()
    with service.store.session() as session:
        for trial_id in trial_ids:
            if claim_queued_trial(
                session,
                experiment_id=experiment_id,
                trial_id=trial_id,
                limits=[limit],
                worker_key=None,
            ):
                claimed.add(trial_id)
    return claimed
