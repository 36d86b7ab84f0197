"""Two `trainyard server` replicas on one PostgreSQL: the leader is SIGKILLed during a search,
the follower takes over within 15 s, and every trial ends COMPLETED, launched once more only
if it was running at the kill, never by two workers at once."""

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
from trainyard.executors.fork_server import is_running
from trainyard.protocol import ExperimentState, ExperimentSubmission, TrialState
from trainyard.store.models import WorkerCredential

TAKEOVER_S = 15
LEARNING_RATES = [0.001, 0.003, 0.01]
BATCHES = 30
KILL_AT_BATCHES = 10
"""Two checkpoints (every 5 batches) are behind a trial when its leader is killed."""
LEADING = re.compile(r"^(\S+ \S+) INFO [\w.]+: leading: ", re.M)


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
    config = tiny_experiment(toy_data, "ha-search", batches=BATCHES)
    config["hyperparameters"] = {
        "lr": {"type": "categorical", "vals": LEARNING_RATES},
        "batch_size": 64,
    }
    config["searcher"] = {"name": "grid", "metric": "val_auc", "mode": "max"}
    config["resources"] = {"max_concurrent_trials": 2}
    client = follower.client()  # a follower stores it; the leader runs it
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
    records = client.trial_records(ref)
    running = {
        r.trial.id: r.trial.worker_pid for r in records if r.trial.state == TrialState.RUNNING
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


def _attempts(engine: Engine, trial_id: int) -> int:
    """Launches of the trial: each gets a credential of its own."""
    with engine.connect() as connection:
        query = select(func.count()).where(WorkerCredential.trial_id == trial_id)
        return int(connection.execute(query).scalar_one())
