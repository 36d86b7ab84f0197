"""A server's loop on a real store and real processes: two experiments run at the same time,
sharing the pool's slots, and stopping the server queues them again for the next start.

The trials are script trials that only sleep (no torch), so what is tested is the loop: which
experiments get runners, how the slots are shared, what stopping leaves in the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import wait_for
from trainyard.config import load_experiment
from trainyard.config.facility import load_facility
from trainyard.executors.fork_server import is_running
from trainyard.master.facility_loop import SERVER_STOPPED, FacilityLoop
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, TrialState
from trainyard.settings import Settings
from trainyard.store import accounts, open_store, shares

SLEEP = "python -c 'import time; time.sleep(120)'"
"""Wants every slot it can get: more trials than the pool has slots, each sleeping."""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MasterService]:
    settings = Settings(
        home=tmp_path / "home", poll_interval_s=0.05, fork_workers=False, stop_grace_s=30
    )
    store = open_store(settings.resolved_database_url())
    yield MasterService(store, settings)
    store.close()


def _sleeper(folder: Path, name: str) -> Path:
    file = folder / f"{name}.yaml"
    file.write_text(
        f"name: {name}\nentrypoint: {SLEEP}\n"
        "hyperparameters: {x: {type: int, min: 0, max: 1000}}\n"
        "searcher: {name: random, metric: loss, mode: min, max_trials: 64}\n"
        "resources: {max_concurrent_trials: 64}\n"
    )
    return file


def test_two_experiments_share_the_pool_and_wait_queued_after_a_stop(
    service: MasterService, tmp_path: Path
) -> None:
    loop = FacilityLoop(
        service=service,
        facility=load_facility(None),
        settings=service.settings,
        master_url="http://127.0.0.1:9",  # the sleeping scripts never call it
    )
    ids = [loop.submit(load_experiment(_sleeper(tmp_path, n))).id for n in ("a", "b")]
    capacity = len(os.sched_getaffinity(0))
    fair = [capacity // 2, capacity - capacity // 2]  # equal weights, one slot of rounding

    def running() -> list[int]:
        return [sum(t.state == TrialState.RUNNING for t in service.list_trials(i)) for i in ids]

    try:
        wait_for(
            lambda: loop.tick() or sorted(running()) == sorted(fair),
            timeout=120,
            what=f"each experiment to run its share {fair} of {capacity} slot(s)",
        )
        for _ in range(20):  # and it stays there: nobody takes more than its share
            loop.tick()
            time.sleep(service.settings.poll_interval_s)
            assert sorted(running()) == sorted(fair)
    finally:
        loop.stop()
    for experiment_id in ids:
        experiment = service.get_experiment(experiment_id)
        assert (experiment.state, experiment.message) == (ExperimentState.QUEUED, SERVER_STOPPED)
        states = {t.state for t in service.list_trials(experiment_id)}
        assert TrialState.RUNNING not in states


def test_a_project_quota_limits_launches_and_the_experiment_says_why(
    service: MasterService, tmp_path: Path
) -> None:
    with service.store.session() as session:
        project = accounts.create_project(session, name="alpha")
        shares.update_project(session, project, {"max_concurrent_trials": 1})
    loop = FacilityLoop(
        service=service,
        facility=load_facility(None),
        settings=service.settings,
        master_url="http://127.0.0.1:9",
    )
    experiment_id = loop.submit(load_experiment(_sleeper(tmp_path, "a")), project=project).id

    def running() -> int:
        return sum(t.state == TrialState.RUNNING for t in service.list_trials(experiment_id))

    try:
        wait_for(lambda: loop.tick() or running() == 1, timeout=60, what="one trial to run")
        for _ in range(10):  # and no second one, whatever the pool's free slots
            loop.tick()
            time.sleep(service.settings.poll_interval_s)
            assert running() == 1
        message = service.get_experiment(experiment_id).message or ""
        assert message.startswith(
            "waiting for quota max_concurrent_trials: project 'alpha' may use 1 trial(s) at "
            "once and use 1 now"
        )
    finally:
        loop.stop()


def test_a_loop_that_stops_leading_leaves_its_trials_to_the_next_leader(
    service: MasterService, tmp_path: Path
) -> None:
    """`abandon` (the lock was lost) writes nothing and ends no worker; the next leader's
    runner ends the leftovers on its restart path and relaunches the trials."""
    file = tmp_path / "left.yaml"
    file.write_text(
        f"name: left\nentrypoint: {SLEEP}\n"
        "hyperparameters: {x: {type: int, min: 0, max: 1000}}\n"
        "searcher: {name: random, metric: loss, mode: min, max_trials: 1}\n"
    )
    loops = [
        FacilityLoop(
            service=service,
            facility=load_facility(None),
            settings=service.settings,
            master_url=f"http://127.0.0.1:{port}",  # the sleeping script never calls it
        )
        for port in (9, 10)
    ]
    experiment_id = loops[0].submit(load_experiment(file)).id

    def trial_pid() -> int | None:
        running = [t for t in service.list_trials(experiment_id) if t.state == TrialState.RUNNING]
        return running[0].worker_key if running else None

    try:
        wait_for(lambda: loops[0].tick() or trial_pid() is not None, timeout=60, what="a run")
        old_pid = trial_pid()
        assert old_pid is not None
        loops[0].abandon()
        assert service.get_experiment(experiment_id).state == ExperimentState.RUNNING
        assert trial_pid() == old_pid and is_running(old_pid)
        wait_for(
            lambda: loops[1].tick() or trial_pid() not in (None, old_pid),
            timeout=60,
            what="the next leader to relaunch the trial",
        )
        assert not is_running(old_pid)
        (trial,) = service.list_trials(experiment_id)
        assert trial.num_restarts == 0  # a takeover is no failure of the trial
    finally:
        loops[1].stop()
