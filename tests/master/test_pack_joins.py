"""Joins: a running pack's worker takes a queued trial of its experiment for a free place.

Over the real HTTP routes and a real store (SQLite and PostgreSQL): the claim is conditional
(a trial is started once, by a pack or by the runner, and two concurrent claims get two
trials), it respects max_concurrent_trials, and only a credential of a member of that very
pack may claim for it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.executors.test_local import UNREACHABLE_MASTER
from tests.master.conftest import ADMIN_TOKEN
from trainyard.config import parse_experiment
from trainyard.executors import LocalExecutor, WorkerLaunch
from trainyard.master.api.app import create_app
from trainyard.master.pack_joins import claim_for_launch
from trainyard.master.pack_roster import PackRoster, orphaned_joins
from trainyard.master.runner import ExperimentRunner, RunAbandoned
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, TrialState
from trainyard.store import Project


def _experiment(
    service: MasterService,
    tmp_path: Path,
    *,
    name: str = "packed",
    pack: int | str = 2,
    max_concurrent_trials: int = 4,
    num_trials: int = 4,
    model: str = "mlp",
) -> list[int]:
    """A packed grid experiment, RUNNING, with `num_trials` queued trials."""
    config = parse_experiment(
        {
            "name": name,
            "model": model,
            "data": {"train": str(tmp_path / "t/*.parquet"), "val": str(tmp_path / "v/*.parquet")},
            "hyperparameters": {
                "lr": {"type": "categorical", "vals": [0.01 * (i + 1) for i in range(12)]}
            },
            "searcher": {"name": "grid"},
            "training": {"max_length": {"batches": 10}},
            "resources": {"pack": pack, "max_concurrent_trials": max_concurrent_trials},
        }
    )
    experiment_id = service.create_experiment(config)
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    return service.create_trials(experiment_id, num_free=num_trials)


def _in_pack(service: MasterService, pid: int, *trial_ids: int) -> TestClient:
    """The trials RUNNING in one pack's worker `pid`; the API as that worker calls it with
    the first member's credential."""
    for trial_id in trial_ids:
        service.update_trial(trial_id, state=TrialState.RUNNING, worker_key=pid)
    token = service.issue_worker_token(trial_ids[0])
    return TestClient(
        create_app(service, admin_token=ADMIN_TOKEN), headers={"Authorization": f"Bearer {token}"}
    )


def _join(worker: TestClient, caller: int, members: list[int]) -> dict:
    response = worker.post(f"/api/v1/trials/{caller}/pack/join", json={"members": members})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_pack_takes_the_next_queued_trial_with_its_spec_and_own_credential(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, third, _ = _experiment(service, tmp_path)
    worker = _in_pack(service, 4242, first)
    offer = _join(worker, first, [first])
    assert offer["trial_id"] == second and offer["reason"] == ""
    assert offer["spec"]["trial_id"] == second and offer["spec"]["attempt"] == 1
    joined = service.get_trial(second)
    assert (joined.state, joined.worker_key) == (TrialState.RUNNING, 4242)
    as_joined = TestClient(
        create_app(service, admin_token=ADMIN_TOKEN),
        headers={"Authorization": f"Bearer {offer['token']}"},
    )
    assert as_joined.get(f"/api/v1/trials/{second}/spec").json()["trial_id"] == second
    # Two members now, `pack: 2`: full.
    full = _join(worker, first, [first, second])
    assert full == {
        "trial_id": None,
        "spec": None,
        "token": None,
        "reason": ("the pack is full (2 trials)"),
    }
    assert service.get_trial(third).state is TrialState.QUEUED


def test_a_trial_is_started_once_whoever_claims_it_first(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, third, fourth = _experiment(service, tmp_path)
    experiment_id = service.get_trial(first).experiment_id
    worker = _in_pack(service, 4242, first)
    assert _join(worker, first, [first])["trial_id"] == second
    # The runner, which read the queue before the join, cannot launch the joined trial.
    claimed = claim_for_launch(
        service, experiment_id=experiment_id, trial_ids=[second, third], max_concurrent_trials=4
    )
    assert claimed == {third}
    # And a trial the runner claimed is not offered to a pack.
    other = _in_pack(service, 777, fourth)
    assert _join(other, fourth, [fourth])["reason"] == "no trial of the experiment is queued"


def test_two_packs_claiming_at_once_get_two_different_trials(
    service: MasterService, tmp_path: Path
) -> None:
    trials = _experiment(service, tmp_path, pack=4, max_concurrent_trials=6, num_trials=6)
    workers = [_in_pack(service, 1000 + i, trials[i]) for i in range(2)]
    barrier = threading.Barrier(2)
    offers: list[int | None] = [None, None]

    def claim(i: int) -> None:
        barrier.wait()
        offers[i] = _join(workers[i], trials[i], [trials[i]])["trial_id"]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(offers) == trials[2:4]  # type: ignore[type-var]
    pids = {service.get_trial(t).worker_key for t in offers if t is not None}
    assert pids == {1000, 1001}


def test_a_pack_at_max_concurrent_trials_gets_none(service: MasterService, tmp_path: Path) -> None:
    first, second, third, _ = _experiment(service, tmp_path, pack=4, max_concurrent_trials=2)
    worker = _in_pack(service, 4242, first)
    _in_pack(service, 777, second)  # another worker holds the experiment's second trial
    offer = _join(worker, first, [first])
    assert offer["trial_id"] is None
    assert offer["reason"] == (
        "the experiment's resources.max_concurrent_trials is reached (2 running trials)"
    )
    assert service.get_trial(third).state is TrialState.QUEUED


def test_a_lost_answer_is_offered_again_not_a_second_trial(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, third, _ = _experiment(service, tmp_path, pack=4)
    worker = _in_pack(service, 4242, first)
    assert _join(worker, first, [first])["trial_id"] == second
    again = _join(worker, first, [first])  # the worker never saw the first answer
    assert again["trial_id"] == second and again["spec"]["attempt"] == 2
    assert service.get_trial(third).state is TrialState.QUEUED


def test_only_a_member_of_that_pack_may_claim_for_it(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, third, _ = _experiment(service, tmp_path, pack=4)
    (foreign,) = _experiment(service, tmp_path, name="other", num_trials=1)
    ours = _in_pack(service, 4242, first)
    theirs = _in_pack(service, 777, second)
    outsider = _in_pack(service, 999, foreign)
    # Another experiment's credential on our trial: refused by the credential check.
    refused = outsider.post(f"/api/v1/trials/{first}/pack/join", json={"members": [first]})
    assert refused.status_code == 403
    assert f"belongs to trial {foreign}" in refused.json()["detail"]
    # Another pack's member listed as ours: refused.
    refused = ours.post(f"/api/v1/trials/{first}/pack/join", json={"members": [first, second]})
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        f"trial(s) {second} are not running in the pack of trial {first}; a pack takes "
        "trials only for itself"
    )
    assert (
        theirs.post(f"/api/v1/trials/{second}/pack/join", json={"members": [first]})
        .json()["detail"]
        .startswith(f"trial {second} is not running in a pack that lists it")
    )
    assert service.get_trial(third).state is TrialState.QUEUED


@pytest.mark.parametrize(
    ("pack", "why"),
    [
        ("off", "`resources.pack: off`"),
        # `auto` packs no MLP on any device: a solo worker (every trial has a worker key)
        # cannot gather a pack.
        ("auto", "`resources.pack: auto`, which packs mlp on no device"),
    ],
)
def test_an_experiment_that_does_not_pack_takes_no_joins(
    service: MasterService, tmp_path: Path, pack: str, why: str
) -> None:
    first, second = _experiment(service, tmp_path, pack=pack, num_trials=2)
    worker = _in_pack(service, 4242, first)
    refused = worker.post(f"/api/v1/trials/{first}/pack/join", json={"members": [first]})
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        f"trial {first}'s experiment 'packed' does not pack trials ({why}); "
        "only a packed worker may take queued trials"
    )
    assert service.get_trial(second).state is TrialState.QUEUED


def test_an_auto_pack_holds_at_most_what_auto_picks_on_any_device(
    service: MasterService, tmp_path: Path
) -> None:
    """ParticleNet-Lite packs 8 under `auto` on a GPU (config/packing.py AUTO_PACK_SIZES);
    the Master, which does not know the worker's device, holds the pack to that."""
    trials = _experiment(
        service,
        tmp_path,
        pack="auto",
        model="particlenet-lite",
        max_concurrent_trials=10,
        num_trials=10,
    )
    worker = _in_pack(service, 4242, *trials[:8])
    assert _join(worker, trials[0], trials[:8])["reason"] == "the pack is full (8 trials)"
    service.update_trial(trials[7], state=TrialState.STOPPED)
    assert _join(worker, trials[0], trials[:7])["trial_id"] == trials[8]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_runner_counts_a_joined_trial_as_its_packs(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, third, _ = _experiment(service, tmp_path, pack=3)
    experiment_id = service.get_trial(first).experiment_id
    roster = PackRoster(service)
    roster.add(first, [first, second], 4242)
    _in_pack(service, 4242, first, second, third)  # `third` joined through the Master
    assert roster.adopt_joined(experiment_id) == [third]
    assert roster.members(first) == [first, second, third]
    assert roster.adopt_joined(experiment_id) == []
    assert roster.free_places(service.list_trials(experiment_id), 3) == 0
    service.update_trial(second, state=TrialState.STOPPED)
    assert roster.free_places(service.list_trials(experiment_id), 3) == 1
    assert roster.pop(first) == [first, second, third]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_trial_claimed_by_a_pack_that_died_is_found_orphaned(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, third, fourth = _experiment(service, tmp_path, pack=3)
    _in_pack(service, 4242, first, second)
    worker = _in_pack(service, 4242, first)
    assert _join(worker, first, [first, second])["trial_id"] == third
    service.update_trial(fourth, state=TrialState.RUNNING)  # claimed by a launch: no pid yet
    trials = service.list_trials(service.get_trial(first).experiment_id)
    # The pack's worker lives: its claim is adopted at the next tick, not orphaned.
    assert orphaned_joins(trials, live_trials={first, second}, live_keys={4242}) == []
    # It exited before the runner saw the join: the claimed trial is orphaned.
    assert [t.id for t in orphaned_joins(trials, live_trials=set(), live_keys=set())] == [
        first,
        second,
        third,
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_restarted_runner_ends_the_leftover_pack_of_a_joined_trial(
    service: MasterService, tmp_path: Path
) -> None:
    """An earlier Master's pack, whose host completed and whose one running member joined
    later (so the worker is named only after its host): the new runner ends it before
    requeueing the joined trial, so two attempts never write one trial's checkpoints."""
    first, second, third, _ = _experiment(service, tmp_path, pack=2)
    experiment_id = service.get_trial(first).experiment_id
    earlier = LocalExecutor(gpu_ids=[], num_cpu_slots=1, threads_per_cpu_slot=1, fork_server=True)
    try:
        earlier.launch(
            WorkerLaunch(
                trial_id=first,
                num_slots=1,
                log_path=tmp_path / "w.log",
                env={**UNREACHABLE_MASTER, "TRAINYARD_TRIAL_ID": str(first)},
            )
        )
        pid = earlier.worker_key(first)
        service.update_trial(first, state=TrialState.COMPLETED, worker_key=pid)
        service.update_trial(second, state=TrialState.STOPPED, worker_key=pid)
        service.update_trial(third, state=TrialState.RUNNING, worker_key=pid)  # joined
        runner = ExperimentRunner(
            service=service,
            executor=LocalExecutor(gpu_ids=[], num_cpu_slots=1, threads_per_cpu_slot=1),
            settings=service.settings,
            master_url="http://127.0.0.1:9",
        )
        runner.request_abandon()  # only the restart path: nothing is launched
        with pytest.raises(RunAbandoned):
            runner.run(experiment_id)
        assert service.get_trial(third).state is TrialState.QUEUED
        deadline = time.monotonic() + 30
        while earlier.poll(first) is None:
            assert time.monotonic() < deadline, "the leftover pack was not ended"
            time.sleep(0.05)
    finally:
        earlier.close()


def test_a_pack_at_its_projects_trial_quota_gets_none(
    service: MasterService, tmp_path: Path
) -> None:
    first, second, _, _ = _experiment(service, tmp_path, pack=4)
    (other,) = _experiment(service, tmp_path, name="neighbour", num_trials=1)
    with service.store.session() as session:  # the facility admin's quota on the project
        session.scalars(select(Project)).one().max_concurrent_trials = 2
    worker = _in_pack(service, 4242, first)
    _in_pack(service, 777, other)  # the project's other experiment holds the second trial
    offer = _join(worker, first, [first])
    assert offer["trial_id"] is None
    assert offer["reason"] == (
        "quota max_concurrent_trials of project 'default' is reached (2 running trials)"
    )
    assert service.get_trial(second).state is TrialState.QUEUED
