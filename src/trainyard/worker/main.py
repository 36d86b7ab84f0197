"""Worker entry point: fetch the spec, re-validate it, train, and report how it ended.

Kept short on purpose; the loop is in trainer.py. Exit codes: 0 when the outcome was reported,
1 on an error (reported when the Master is reachable), 2 when started without an
executor's environment, 3 when the Master is gone.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from types import FrameType

from trainyard.config import parse_experiment
from trainyard.errors import TrainyardError
from trainyard.worker.client import MasterClient, MasterUnreachableError

logger = logging.getLogger("trainyard.worker")

EXIT_MASTER_GONE = 3


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise
    stop_requested = threading.Event()

    def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: checkpointing and stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)
    try:
        client = MasterClient.from_env()
    except TrainyardError as err:
        logger.error("%s", err)
        return 2
    trainer = None
    try:
        spec = client.trial_spec()
        client.heartbeat(batches=0)  # alive; loading data and building the model may take long
        config = parse_experiment(spec["config"], source=f"trial {spec['trial_id']} spec")
        from trainyard.worker.trainer import Trainer  # torch loads only after the spec is fine

        trainer = Trainer(spec=spec, config=config, client=client, stop_requested=stop_requested)
        outcome = trainer.train()
        if outcome == "stopped" and stop_requested.is_set():
            outcome = "paused"  # a stop signal pauses (resumable); the searcher's stop is final
        client.report_outcome(outcome)
        logger.info("trial %s %s", spec["trial_number"], outcome)
        return 0
    except MasterUnreachableError as err:
        logger.error("%s; saving a checkpoint and exiting", err)
        if trainer is not None:
            trainer.save_checkpoint(notify_master=False)
        return EXIT_MASTER_GONE
    except Exception as err:
        message = str(err) if isinstance(err, TrainyardError) else traceback.format_exc()
        logger.error("trial failed: %s", message)
        try:
            client.report_outcome("errored", f"{type(err).__name__}: {message}")
        except MasterUnreachableError:
            return EXIT_MASTER_GONE
        return 1
    finally:
        client.close()
