"""A pool shared by a server's experiments: each sees its own workers and its own offer, and
no launch ever takes more slots than the pool has. Real worker processes on a real
LocalExecutor."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainyard.executors import LocalExecutor, WorkerLaunch
from trainyard.executors.base import SlotsTaken
from trainyard.master.pool_share import PoolShare

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


@pytest.fixture
def pool() -> Iterator[PoolShare]:
    executor = LocalExecutor(gpu_ids=[], num_cpu_slots=3, threads_per_cpu_slot=1)
    share = PoolShare("default", open_executor=lambda _name: executor, shared=True)
    yield share
    for trial_id in executor.running():
        executor.kill(trial_id)
        while executor.poll(trial_id) is None:
            time.sleep(0.01)
    share.close()


def _launch(slots, trial_id: int, tmp_path: Path, num_slots: int = 1) -> None:
    slots.launch(
        WorkerLaunch(
            trial_id=trial_id,
            num_slots=num_slots,
            log_path=tmp_path / f"{trial_id}.log",
            command=SLEEPER,
            workdir=tmp_path,
        )
    )


def test_each_experiment_sees_its_offer_and_its_own_workers(
    pool: PoolShare, tmp_path: Path
) -> None:
    first, second = pool.slots_for(1, "a"), pool.slots_for(2, "b")
    assert (first.free_slots(), second.free_slots()) == (0, 0)  # nothing offered yet
    pool.set_offers({1: 2, 2: 1})
    assert (first.free_slots(), second.free_slots()) == (2, 1)
    _launch(first, 10, tmp_path)
    _launch(second, 20, tmp_path)
    assert (first.running(), second.running()) == ([10], [20])
    assert (first.free_slots(), second.free_slots(), pool.held(1)) == (1, 0, 1)
    assert first.capacity() == second.capacity() == 3


def test_a_launch_beyond_the_pools_free_slots_stays_queued(
    pool: PoolShare, tmp_path: Path
) -> None:
    first, second = pool.slots_for(1, "a"), pool.slots_for(2, "b")
    pool.set_offers({1: 3})
    _launch(first, 10, tmp_path, num_slots=2)
    pool.set_offers({1: 1, 2: 2})  # a new experiment arrived: the first holds more than its offer
    assert second.free_slots() == 1  # what the pool has left, not the offer
    _launch(second, 20, tmp_path)
    with pytest.raises(SlotsTaken, match="pool 'default' has 0 free slot"):
        _launch(second, 21, tmp_path)
    assert second.running() == [20]


def test_a_reaped_worker_gives_its_slots_back(pool: PoolShare, tmp_path: Path) -> None:
    first = pool.slots_for(1, "a")
    pool.set_offers({1: 3})
    _launch(first, 10, tmp_path, num_slots=3)
    assert first.free_slots() == 0
    first.kill(10)
    while first.poll(10) is None:
        time.sleep(0.01)
    assert (first.running(), first.free_slots()) == ([], 3)
