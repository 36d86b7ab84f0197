"""A packed worker's side of joins: ask the Master for a queued trial and build it.

The Master claims the trial for this pack (master/pack_joins.py) and answers with its spec and
its attempt's own credential; the new member is built exactly as an initial one (its own
client, loader, seed, checkpoint folder, resume from its own newest checkpoint).
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable

from trainyard.errors import TrainyardError
from trainyard.protocol import PACK_SIZE_ENV, OutcomeState, TrialSpec
from trainyard.worker.client import (
    CredentialRefusedError,
    MasterClient,
    MasterUnreachableError,
)
from trainyard.worker.packing.loop import PackedTrial, logging_as

logger = logging.getLogger(__name__)


def pack_size_from_env(num_members: int) -> int:
    """How many trials this worker may train at once (the runner's K); without the variable
    (a runner of an older version), the members it started with: no joins."""
    value = os.environ.get(PACK_SIZE_ENV, "")
    return int(value) if value.isdigit() else num_members


def recruit_member(
    members: list[PackedTrial], build: Callable[[MasterClient, TrialSpec], PackedTrial]
) -> PackedTrial | None:
    """The trial the Master gives this pack for a free place, built; None when it has none.

    A member that cannot be built (its data or checkpoint is broken) is reported errored on
    its own, as a solo worker would report it. Raises MasterUnreachableError.
    """
    asker = members[0].client
    try:
        offer = asker.join_pack([m.client.trial_id for m in members])
    except CredentialRefusedError as err:  # this member's attempt just ended: ask later
        logger.info("no join now: %s", err)
        return None
    if offer.trial_id is None or offer.spec is None or offer.token is None:
        logger.debug("no trial to join: %s", offer.reason)
        return None
    client = asker.for_trial(offer.trial_id, offer.token)
    logger.info("trial %s joins the pack (trial id %d)", offer.spec.trial_number, offer.trial_id)
    try:
        return build(client, offer.spec)
    except MasterUnreachableError:
        raise
    except CredentialRefusedError as err:
        logger.error("trial %s: %s; it does not join", offer.spec.trial_number, err)
    except TrainyardError as err:
        _report_unbuilt(client, offer.spec, str(err), err)
    except Exception as err:
        _report_unbuilt(client, offer.spec, traceback.format_exc(), err)
    client.close()
    return None


def _report_unbuilt(client: MasterClient, spec: TrialSpec, message: str, err: Exception) -> None:
    with logging_as(spec.trial_number):
        logger.error("trial %s failed: %s", spec.trial_number, message)
    client.report_outcome(OutcomeState.ERRORED, f"{type(err).__name__}: {message}")
