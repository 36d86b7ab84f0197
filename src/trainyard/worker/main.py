"""Worker entry point: join the trial's ranks, fetch the spec, re-validate it, train, and report
how it ended.

Kept short on purpose; the loop is in trainer.py. One process per rank runs this (torchrun
starts them for a multi-slot trial); only rank 0 talks to the Master. Exit codes: 0 when the
outcome was reported, 1 on an error (reported by rank 0 when the Master is reachable, or left
to the runner when another rank died first), 2 when started without an executor's
environment, 3 when the Master is gone, 4 when the Master refused this attempt's credential
(another attempt owns the trial; nothing was written).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import traceback
from types import FrameType

from trainyard.config.trial import TrialConfig
from trainyard.errors import TrainyardError
from trainyard.protocol import OutcomeState, TrialSpec
from trainyard.worker.allocator import keep_freed_memory
from trainyard.worker.client import CredentialRefusedError, MasterClient, MasterUnreachableError

logger = logging.getLogger("trainyard.worker")

EXIT_ERROR = 1
EXIT_MASTER_GONE = 3
EXIT_SUPERSEDED = 4


def main() -> int:
    rank = int(os.environ.get("RANK", "0"))
    _configure_logging(rank, int(os.environ.get("WORLD_SIZE", "1")))
    keep_freed_memory()  # before torch allocates: steps reuse their pages (allocator.py)
    stop_requested = threading.Event()

    def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: checkpointing and stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)
    try:
        client = MasterClient.from_env()
        members = MasterClient.pack_from_env()
    except TrainyardError as err:
        logger.error("%s", err)
        return 2
    if members:
        client.close()
        return _main_pack(members, stop_requested)
    from trainyard.worker import distributed

    try:
        world = distributed.init_distributed()
        spec = world.broadcast(client.trial_spec() if world.is_primary else None)
        if not isinstance(spec.config, TrialConfig):
            raise TrainyardError(
                f"trial {spec.trial_id} is a script trial (entrypoint "
                f"{shlex.join(spec.config.entrypoint.command)!r}); its executor runs that "
                "command, not trainyard.worker"
            )
        if world.is_primary:
            client.heartbeat(batches=0)  # alive; loading data and building the model take long
        from trainyard.worker.reporter import Reporter
        from trainyard.worker.trainer import Trainer

        reporter = Reporter(
            client if world.is_primary else None,
            heartbeat_interval_s=spec.heartbeat_interval_s,
        )
        trainer = Trainer(spec=spec, reporter=reporter, world=world, stop_requested=stop_requested)
        outcome = trainer.train()
        if world.is_primary:
            client.report_outcome(outcome)
        logger.info("trial %s %s (attempt %d)", spec.trial_number, outcome.value, spec.attempt)
        return 0
    except (MasterUnreachableError, CredentialRefusedError) as err:
        return _left_the_master(err)
    except Exception as err:
        if distributed.is_peer_failure(err):
            # Another rank died first: its error, and torchrun's summary of which rank failed
            # how, are in this log, which the runner reports; this rank's view adds nothing.
            logger.error("rank %d: another rank of this trial failed first: %s", rank, err)
            return EXIT_ERROR
        message = str(err) if isinstance(err, TrainyardError) else traceback.format_exc()
        logger.error("trial failed: %s", message)
        _record_for_torchrun(err)
        if rank != 0:
            return EXIT_ERROR
        return _report_errored([client], err, message)
    finally:
        client.close()
        distributed.close_distributed()


def _main_pack(clients: list[MasterClient], stop_requested: threading.Event) -> int:
    """A packed worker (worker/packing/loop.py): one Trainer per member trial, one fused step.

    Each member reports its own outcome as it ends; an error outside any one member (the
    fused step, building a member) is reported as every remaining member's error.
    """
    from trainyard.worker import distributed
    from trainyard.worker.packing.joins import pack_size_from_env, recruit_member
    from trainyard.worker.packing.loop import (
        PackedTrial,
        PackLoop,
        logging_as,
        name_members_in_log,
    )
    from trainyard.worker.reporter import Reporter
    from trainyard.worker.trainer import Trainer

    name_members_in_log()
    world = distributed.init_distributed()
    unreported = list(clients)

    def build(client: MasterClient, spec: TrialSpec) -> PackedTrial:
        """A member's own Trainer, as a solo worker builds it (it resumes there)."""
        client.heartbeat(batches=0)
        reporter = Reporter(client, heartbeat_interval_s=spec.heartbeat_interval_s)
        with logging_as(spec.trial_number):
            trainer = Trainer(
                spec=spec,
                reporter=reporter,
                world=world,
                stop_requested=stop_requested,
                own_rng=True,
            )
        return PackedTrial(client=client, trainer=trainer)

    def recruit(members: list[PackedTrial]) -> PackedTrial | None:
        joined = recruit_member(members, build)
        if joined is not None:
            clients.append(joined.client)
        return joined

    try:
        members = [build(client, client.trial_spec()) for client in clients]
        loop = PackLoop(members, size=pack_size_from_env(len(clients)), recruit=recruit)
        try:
            loop.train()
        finally:
            unreported = [m.client for m in loop.remaining.values()]
        return 0
    except (MasterUnreachableError, CredentialRefusedError) as err:
        return _left_the_master(err)
    except Exception as err:
        message = str(err) if isinstance(err, TrainyardError) else traceback.format_exc()
        logger.error("pack failed: %s", message)
        return _report_errored(unreported, err, message)
    finally:
        for client in clients:
            client.close()


def _left_the_master(err: MasterUnreachableError | CredentialRefusedError) -> int:
    if isinstance(err, MasterUnreachableError):
        logger.error("%s; exiting", err)
        return EXIT_MASTER_GONE
    logger.error("%s; exiting without writing anything", err)
    return EXIT_SUPERSEDED


def _report_errored(clients: list[MasterClient], err: Exception, message: str) -> int:
    """Report the error as each trial's outcome; the exit code says whether that worked."""
    try:
        for client in clients:
            client.report_outcome(OutcomeState.ERRORED, f"{type(err).__name__}: {message}")
    except MasterUnreachableError:
        return EXIT_MASTER_GONE
    except CredentialRefusedError:
        return EXIT_SUPERSEDED
    return EXIT_ERROR


def _configure_logging(rank: int, world_size: int) -> None:
    """One log per trial: rank 0 logs everything, other ranks only warnings and errors, and
    every line of a multi-rank trial names its rank."""
    where = f"rank {rank} " if world_size > 1 else ""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise


def _record_for_torchrun(err: BaseException) -> None:
    """Leave the error where torchrun's agent looks (TORCHELASTIC_ERROR_FILE), so its closing
    summary names this rank's error as the root cause instead of a bare exit code."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    get_error_handler().record_exception(err)
