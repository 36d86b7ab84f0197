"""Preemption end to end on a local pool: project alpha fills every slot, project beta arrives,
and with preemption on, alpha's trials that ran the minimum time are told to stop (SIGTERM):
their scripts leave through trainyard.core, which reports them paused, their runner requeues
them, and beta's trials start in the slots they freed. No trial errors.

Real processes and a real Master API on 127.0.0.1: the trials are scripts that only wait for
`should_stop`, so what is tested is the loop's placement, the preemption and the runner's
requeue path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import wait_for
from trainyard.config import load_experiment
from trainyard.config.facility import load_facility
from trainyard.config.server import PreemptionSpec, SharesSpec
from trainyard.master.api.app import create_app
from trainyard.master.facility_loop import FacilityLoop
from trainyard.master.server import EmbeddedServer
from trainyard.master.service import MasterService
from trainyard.protocol import TrialState
from trainyard.settings import Settings
from trainyard.store import Project, accounts, open_store

WAITER = """\
import os, time
import trainyard.core as core

def mark(what):
    with open(os.environ["MARKS"], "a") as marks:
        marks.write(f"{os.environ['TRAINYARD_TRIAL_ID']} {what}\\n")

with core.init() as ctx:
    mark("in")  # SIGTERM from here on is a pause (before, it would end the process)
    while not ctx.should_stop():
        time.sleep(0.1)
mark("out")
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MasterService]:
    settings = Settings(
        home=tmp_path / "home", poll_interval_s=0.1, fork_workers=False, stop_grace_s=30
    )
    store = open_store(settings.resolved_database_url())
    yield MasterService(store, settings)
    store.close()


def _waiter(folder: Path, name: str) -> Path:
    (folder / "waiter.py").write_text(WAITER)
    file = folder / f"{name}.yaml"
    file.write_text(
        f"name: {name}\n"
        "entrypoint:\n"
        "  command: python waiter.py\n"
        f"  workdir: {folder}\n"
        f"  environment: {{MARKS: {folder / 'marks.txt'}}}\n"
        "hyperparameters: {x: {type: int, min: 0, max: 1000}}\n"
        "searcher: {name: random, metric: loss, mode: min, max_trials: 64}\n"
        "resources: {max_concurrent_trials: 64}\n"
    )
    return file


def _project(service: MasterService, name: str) -> Project:
    with service.store.session() as session:
        return accounts.create_project(session, name=name)


def test_a_starved_project_preempts_trials_that_checkpoint_and_requeue(
    service: MasterService, tmp_path: Path
) -> None:
    server = EmbeddedServer(create_app(service))
    server.start()
    loop = FacilityLoop(
        service=service,
        facility=load_facility(None),
        settings=service.settings,
        master_url=server.url,
        shares=SharesSpec(preemption=PreemptionSpec(enabled=True, min_run_minutes=0.02)),
    )
    alpha, beta = _project(service, "alpha"), _project(service, "beta")

    def marked(what: str) -> list[int]:
        marks = tmp_path / "marks.txt"
        lines = marks.read_text().splitlines() if marks.exists() else []
        return [int(line.split()[0]) for line in lines if line.endswith(f" {what}")]

    def trials(experiment_id: int, state: TrialState) -> list[int]:
        return [t.id for t in service.list_trials(experiment_id) if t.state == state]

    try:
        first = loop.submit(load_experiment(_waiter(tmp_path, "a")), project=alpha).id
        capacity = len(os.sched_getaffinity(0))  # a local pool: one slot per core
        wait_for(
            lambda: loop.tick() or len(marked("in")) == capacity,
            timeout=60,
            what="alpha's trials to fill the pool and enter trainyard.core",
        )
        second = loop.submit(load_experiment(_waiter(tmp_path, "b")), project=beta).id
        wait_for(
            lambda: loop.tick() or len(trials(second, TrialState.RUNNING)) >= 1,
            timeout=60,
            what="beta to get slots that alpha's preempted trials freed",
        )
        preempted = marked("out")
        assert preempted and set(preempted) <= {t.id for t in service.list_trials(first)}
        back = (TrialState.QUEUED, TrialState.RUNNING)
        wait_for(  # paused by its script, then back in the queue
            lambda: loop.tick() or all(service.get_trial(t).state in back for t in preempted),
            timeout=30,
            what=f"preempted trials {preempted} to be requeued",
        )
        for experiment_id in (first, second):
            assert not trials(experiment_id, TrialState.ERRORED)
    finally:
        loop.stop()
        server.stop()
