"""Two `trainyard server` replicas on one PostgreSQL. The leader is SIGKILLed during a search:
the follower takes over within 15 s, and every trial ends COMPLETED, launched once more only
if it was running at the kill, never by two workers at once. The leader is stopped (SIGTERM,
as for an upgrade): it pauses its trials at a checkpoint and exits cleanly, the follower leads
and continues each trial from the step it was paused at."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, create_engine, func, select

from tests.integration.helpers import wait_for
from tests.integration.server_process import ServerProcess, tiny_experiment
from tests.postgres import PostgresServer
from trainyard.cli.client import MasterClient
from trainyard.executors.fork_server import is_running
from trainyard.protocol import ExperimentState, ExperimentSubmission, TrialState
from trainyard.store.models import WorkerCredential

TAKEOVER_S = 15
LEARNING_RATES = [0.001, 0.003, 0.01]
BATCHES = 30
KILL_AT_BATCHES = 10
"""Two checkpoints (every 5 batches) are behind a trial when its leader is killed."""
LEADING = re.compile(r"^(\S+ \S+) INFO [\w.]+: leading: ", re.M)
RESUMED = re.compile(r"resumed from \S+ at batch (\d+)")


@pytest.fixture
def replicas(
    postgres_server: PostgresServer, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one database and one storage folder (checkpoints, logs), started at
    once: (the leader, the follower)."""
    name = f"trainyard_ha_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url, storage = postgres_server.url(name), str(tmp_path / "shared-storage")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    servers = (
        ServerProcess(tmp_path / "a", url, storage=storage),
        ServerProcess(tmp_path / "b", url, storage=storage, migrate=False),
    )
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        wait_for(
            lambda: any(LEADING.search(s.log.read_text()) for s in servers),
            timeout=30,
            what="one server to lead",
        )
        leader = next(s for s in servers if LEADING.search(s.log.read_text()))
        yield leader, next(s for s in servers if s is not leader)
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.stop(signal.SIGKILL)
        with postgres_server.connect() as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_follower_takes_over_a_search_when_the_leader_is_killed(
    replicas: tuple[ServerProcess, ServerProcess], toy_data: Path
) -> None:
    leader, follower = replicas
    assert leader.process is not None
    wait_for(
        lambda: (
            f"following (leader is trainyard pid {leader.process.pid} {leader.url})"
            in follower.log.read_text()
        ),
        timeout=30,
        what="the other server to follow the leader, naming it",
    )
    client = follower.client()  # a follower stores it; the leader runs it
    ref = _submit_search_and_wait_for_training(client, toy_data)
    records = client.trial_records(ref)
    running = {
        r.trial.id: r.trial.worker_key for r in records if r.trial.state == TrialState.RUNNING
    }
    checkpointed = {r.trial.id for r in records if r.trial.batches_trained >= KILL_AT_BATCHES}
    killed_at = datetime.now()  # local time, as in the servers' log lines
    leader.stop(signal.SIGKILL)

    wait_for(
        lambda: LEADING.search(follower.log.read_text()) is not None,
        timeout=TAKEOVER_S,
        what=f"the follower to lead within {TAKEOVER_S} s of the kill",
    )
    found = LEADING.search(follower.log.read_text())
    assert found is not None
    took_s = (datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f") - killed_at).total_seconds()
    print(f"takeover {took_s:.2f} s after the SIGKILL")
    assert took_s < TAKEOVER_S

    engine = create_engine(follower.database or "")
    try:
        for trial_id, old_pid in running.items():
            wait_for(
                lambda trial_id=trial_id: _attempts(engine, trial_id) >= 2,
                timeout=60,
                what=f"trial {trial_id} relaunched by the new leader",
            )
            # The new leader ends the old worker before the relaunch: never two at once.
            assert old_pid is not None and not is_running(old_pid)
        follower.wait_until(ref, {ExperimentState.COMPLETED, ExperimentState.ERRORED}, 120)
        assert client.get_experiment(ref).state == ExperimentState.COMPLETED
        records = client.trial_records(ref)
        assert sorted(r.trial.hyperparameters["lr"] for r in records) == LEARNING_RATES
        for record in records:
            trial = record.trial
            assert (trial.state, trial.batches_trained, trial.num_restarts) == (
                TrialState.COMPLETED,
                BATCHES,
                0,
            )
            assert _attempts(engine, trial.id) == (2 if trial.id in running else 1), trial
            if trial.id in checkpointed:  # from its checkpoint, not from scratch
                assert trial.log_path is not None
                assert " resumed from " in Path(trial.log_path).read_text()
    finally:
        engine.dispose()


def test_a_stopped_leader_hands_its_paused_trials_to_the_follower(
    replicas: tuple[ServerProcess, ServerProcess], toy_data: Path
) -> None:
    leader, follower = replicas
    client = follower.client()
    ref = _submit_search_and_wait_for_training(client, toy_data)
    running = {
        r.trial.id: r.trial.batches_trained
        for r in client.trial_records(ref)
        if r.trial.state == TrialState.RUNNING
    }
    assert leader.stop(signal.SIGTERM) == 0  # pauses at a checkpoint, then lets go
    assert "to the new leader" not in leader.log.read_text()  # paused in order, not abandoned

    wait_for(
        lambda: LEADING.search(follower.log.read_text()) is not None,
        timeout=TAKEOVER_S,
        what=f"the follower to lead within {TAKEOVER_S} s of the leader's exit",
    )
    follower.wait_until(ref, {ExperimentState.COMPLETED, ExperimentState.ERRORED}, 180)
    experiment = client.get_experiment(ref)
    assert experiment.state == ExperimentState.COMPLETED, experiment.message
    for record in client.trial_records(ref):
        trial = record.trial
        assert (trial.state, trial.batches_trained, trial.num_restarts) == (
            TrialState.COMPLETED,
            BATCHES,
            0,
        )
        if running.get(trial.id):  # continued from its pause, not from a periodic checkpoint
            assert trial.log_path is not None
            resumed = RESUMED.search(Path(trial.log_path).read_text())
            assert resumed is not None, trial
            assert int(resumed[1]) >= running[trial.id], (resumed[0], running[trial.id])


def _submit_search_and_wait_for_training(client: MasterClient, toy_data: Path) -> str:
    """A 3-trial grid search, 2 at a time, once a trial has trained KILL_AT_BATCHES batches."""
    config = tiny_experiment(toy_data, "ha-search", batches=BATCHES)
    config["hyperparameters"] = {
        "lr": {"type": "categorical", "vals": LEARNING_RATES},
        "batch_size": 64,
    }
    config["searcher"] = {"name": "grid", "metric": "val_auc", "mode": "max"}
    config["resources"] = {"max_concurrent_trials": 2}
    submission = ExperimentSubmission(yaml=yaml.safe_dump(config), source="ha-search.yaml")
    ref = str(client.submit(submission).id)
    wait_for(
        lambda: any(
            r.trial.state == TrialState.RUNNING and r.trial.batches_trained >= KILL_AT_BATCHES
            for r in client.trial_records(ref)
        ),
        timeout=120,
        what=f"a trial to train {KILL_AT_BATCHES} batches under the first leader",
    )
    return ref


def _attempts(engine: Engine, trial_id: int) -> int:
    """Launches of the trial: each gets a credential of its own."""
    with engine.connect() as connection:
        query = select(func.count()).where(WorkerCredential.trial_id == trial_id)
        return int(connection.execute(query).scalar_one())
