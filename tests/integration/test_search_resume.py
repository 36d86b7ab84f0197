"""A search interrupted mid-way (SIGKILL of `trainyard run`, or Ctrl-C) and resumed with
`trainyard run --resume` explores exactly the configurations an uninterrupted one explores."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import cli_env, experiment, run_cli, start_cli, wait_for
from trainyard.settings import Settings
from trainyard.store import open_store, repository

pytestmark = pytest.mark.integration

MAX_TRIALS = 6


def _search(toy_data: Path) -> dict[str, Any]:
    """A random search of small MLP trials, two at a time."""
    base = experiment(toy_data)
    return {
        **base,
        "name": "resume",
        "model": "mlp",
        "hyperparameters": {"lr": {"type": "log", "min": 1e-4, "max": 3e-2}, "batch_size": 64},
        "searcher": {"name": "random", "max_trials": MAX_TRIALS, "seed": 7},
        "resources": {"max_concurrent_trials": 2},
        "training": {
            **base["training"],
            "max_length": {"batches": 20},
            "validation_period": {"batches": 10},
        },
        "checkpoint": {"period": {"batches": 10}, "keep": 1},
    }


def _trials(home: Path) -> list[tuple[str, float]]:
    """(state, lr) of every trial under `home`, in creation order; [] before the first write."""
    if not (home / "trainyard.db").exists():
        return []
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            if not repository.list_experiments(session):
                return []
            return [
                (t.state.value, t.hyperparameters["lr"])
                for t in repository.list_trials(session, experiment_id=1)
            ]
    finally:
        store.close()


def _worker_keys(home: Path) -> list[int]:
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            trials = repository.list_trials(session, experiment_id=1)
            return [t.worker_key for t in trials if t.state.value == "RUNNING" and t.worker_key]
    finally:
        store.close()


def _mid_search(home: Path) -> bool:
    """At least one trial finished and not every trial created: an interruption now matters."""
    trials = _trials(home)
    return any(state == "COMPLETED" for state, _ in trials) and len(trials) < MAX_TRIALS


@pytest.fixture(scope="module")
def uninterrupted(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> set[float]:
    """The learning rates the same search tries when nothing interrupts it."""
    root = tmp_path_factory.mktemp("uninterrupted")
    file = root / "resume.yaml"
    file.write_text(yaml.safe_dump(_search(toy_data)))
    result = run_cli(["run", str(file)], cli_env(root / "home"))
    assert result.returncode == 0, result.stdout + result.stderr
    trials = _trials(root / "home")
    assert [state for state, _ in trials] == ["COMPLETED"] * MAX_TRIALS
    return {lr for _, lr in trials}


def _kill(cli: subprocess.Popen[str], home: Path) -> None:
    """SIGKILL of `trainyard run` (its workers too: a killed Master's go on alone a while)."""
    pids = _worker_keys(home)
    os.killpg(cli.pid, signal.SIGKILL)
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)
    cli.communicate()


def _pause(cli: subprocess.Popen[str], home: Path) -> None:
    """Ctrl-C: trials checkpoint and the experiment is paused."""
    cli.send_signal(signal.SIGINT)
    output, _ = cli.communicate(timeout=120)
    assert cli.returncode == 130, output


@pytest.mark.parametrize("interrupt", [_kill, _pause], ids=["sigkill", "ctrl-c"])
def test_an_interrupted_search_resumes_with_the_uninterrupted_configurations(
    interrupt: Callable[[subprocess.Popen[str], Path], None],
    toy_data: Path,
    write_experiment: Callable[[dict[str, Any]], Path],
    tmp_path: Path,
    uninterrupted: set[float],
) -> None:
    home = tmp_path / "home"
    cli = start_cli(["run", str(write_experiment(_search(toy_data)))], cli_env(home))
    wait_for(lambda: _mid_search(home), timeout=180, what="a finished trial mid-search")
    interrupt(cli, home)
    finished_before = [t for t in _trials(home) if t[0] == "COMPLETED"]
    assert 0 < len(finished_before) < MAX_TRIALS

    resumed = run_cli(["run", "--resume", "resume"], cli_env(home))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _trials(home)
    assert [state for state, _ in after] == ["COMPLETED"] * MAX_TRIALS
    lrs = [lr for _, lr in after]
    assert len(set(lrs)) == MAX_TRIALS, f"a configuration was proposed twice: {lrs}"
    assert set(lrs) == uninterrupted
    for trial in finished_before:
        assert trial in after, "a finished trial was lost"
