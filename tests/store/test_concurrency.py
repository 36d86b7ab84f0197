"""Several writers at once, and data that outlives the process that wrote it."""

import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from trainyard.store import (
    Store,
    add_metrics,
    create_experiment,
    create_trial,
    get_experiment,
    get_trial,
    list_metrics,
    list_trials,
    open_store,
    record_heartbeat,
    update_trial,
)

from .helpers import run_in_threads

NUM_STEPS = 200


@pytest.mark.parametrize("separate_engines", [False, True], ids=["shared-engine", "two-engines"])
def test_two_writers_both_land(store: Store, database_url: str, separate_engines: bool) -> None:
    """Heartbeats and metrics from two threads, each with its own sessions, none lost.

    Two engines behave like two processes: separate connections contending for the same rows
    (and, on SQLite, for the file lock).
    """
    with store.session() as session:
        experiment = create_experiment(session, name="busy", config={}, home_dir="/runs/busy")
        trial_ids = [
            create_trial(session, experiment_id=experiment.id, hyperparameters={}).id
            for _ in range(2)
        ]
    stores = [store, open_store(database_url) if separate_engines else store]

    def writer(writer_store: Store, trial_id: int) -> Callable[[], None]:
        def loop() -> None:
            for step in range(NUM_STEPS):
                with writer_store.session() as session:
                    record_heartbeat(session, trial_id=trial_id)
                    add_metrics(
                        session,
                        trial_id=trial_id,
                        kind="training",
                        batches=step,
                        epoch=step / NUM_STEPS,
                        values={"loss": 1.0 / (step + 1)},
                    )
                    # Read, then write, in one transaction: the pattern that would hit
                    # "database is locked" without the busy timeout.
                    trial = get_trial(session, trial_id)
                    update_trial(
                        session, trial_id=trial_id, batches_trained=trial.batches_trained + 1
                    )

        return loop

    try:
        run_in_threads(*(writer(s, t) for s, t in zip(stores, trial_ids, strict=True)))
    finally:
        if separate_engines:
            stores[1].close()

    with store.session() as session:
        for trial_id in trial_ids:
            metrics = list_metrics(session, trial_id=trial_id)
            assert [m.batches for m in metrics] == list(range(NUM_STEPS))
            trial = get_trial(session, trial_id)
            assert trial.batches_trained == NUM_STEPS
            assert trial.last_heartbeat_at is not None


def test_data_survives_closing_and_reopening(database_url: str) -> None:
    with open_store(database_url) as store, store.session() as session:
        experiment = create_experiment(session, name="kept", config={"a": 1}, home_dir="/r")
        trial = create_trial(session, experiment_id=experiment.id, hyperparameters={"lr": 0.1})
        update_trial(session, trial_id=trial.id, state="RUNNING")
    with open_store(database_url) as store, store.session() as session:
        reopened = get_experiment(session, "kept")
        assert reopened.config == {"a": 1}
        (trial,) = list_trials(session, experiment_id=reopened.id)
        assert (trial.state, trial.hyperparameters) == ("RUNNING", {"lr": 0.1})


def test_another_process_sees_what_this_one_wrote(database_url: str) -> None:
    """A child process writes and exits; this process then reads it, as a restarted Master."""
    child = textwrap.dedent(
        f"""
        from trainyard.store import add_metrics, create_experiment, create_trial, open_store

        with open_store({database_url!r}) as store, store.session() as session:
            experiment = create_experiment(session, name="child", config={{}}, home_dir="/c")
            trial = create_trial(session, experiment_id=experiment.id, hyperparameters={{}})
            add_metrics(session, trial_id=trial.id, kind="validation", batches=10, epoch=1.0,
                        values={{"auc": 0.9}})
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    with open_store(database_url) as store, store.session() as session:
        experiment = get_experiment(session, "child")
        (trial,) = list_trials(session, experiment_id=experiment.id)
        (metric,) = list_metrics(session, trial_id=trial.id, kind="validation")
        assert metric.values == {"auc": 0.9}
