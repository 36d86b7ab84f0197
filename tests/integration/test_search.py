"""Searches through `trainyard run`: early stopping, retries, and a Master killed mid-search."""

from __future__ import annotations

import os
import re
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import (
    cli_env,
    experiment,
    run_cli,
    start_cli,
    stored_trials,
    wait_for,
)
from trainyard.master.api.app import create_app
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import open_store, repository
from trainyard.web.dashboard import install_dashboard

pytestmark = pytest.mark.integration


def _search(toy_data: Path, searcher: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    base = experiment(toy_data)
    return {
        **base,
        "name": "search",
        "model": "mlp",
        "hyperparameters": {"lr": {"type": "log", "min": 1e-4, "max": 3e-2}, "batch_size": 64},
        "searcher": searcher,
        "resources": {"max_concurrent_trials": 2},
        "training": {
            **base["training"],
            "max_length": {"batches": 30},
            "validation_period": {"batches": 10},
        },
        **overrides,
    }


def _trials(home: Path) -> list[Any]:
    return stored_trials(
        home,
        lambda session, t: (
            t.number,
            t.state.value,
            t.num_restarts,
            len(repository.list_metrics(session, trial_id=t.id)),
        ),
    )


def test_asha_stops_trials_early(toy_data, write_experiment, tmp_path) -> None:
    home = tmp_path / "home"
    config = _search(toy_data, {"name": "asha", "max_trials": 6, "asha": {"reduction_factor": 2}})
    result = run_cli(["run", str(write_experiment(config))], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr
    states = [state for _, state, _, _ in _trials(home)]
    assert len(states) == 6
    assert "STOPPED" in states and "COMPLETED" in states
    assert set(states) <= {"STOPPED", "COMPLETED"}
    _check_the_dashboards_rungs_panel(home)


def _check_the_dashboards_rungs_panel(home: Path) -> None:
    """The experiment page's ASHA panel, as the Master serves it, agrees with the store: rungs
    at 10 and 20 batches (the first validation, x2), every trial that trained that far
    reached a rung, and each stopped trial is listed as stopped at the rung where it ended."""
    trials = stored_trials(home, lambda _, t: (t.number, t.state.value, t.batches_trained))
    settings = Settings(home=home)
    store = open_store(settings.resolved_database_url())
    app = create_app(MasterService(store, settings), admin_token="unused")
    install_dashboard(app, login_token="t")
    try:
        with TestClient(app) as client:
            client.get("/login?token=t")
            page = client.get("/experiments/1").text
    finally:
        store.close()
    table = page[page.index('<table id="rungs">') :]
    rows = re.findall(
        r"<tr><td>(\d+)</td><td>(\d+)</td>\s*<td>(\d+)</td>\s*"
        r'<td class="trials promoted">([#\d, ]*)</td>\s*'
        r'<td class="trials stopped">([#\d, ]*)</td>',
        table[: table.index("</table>")],
    )
    assert [(int(rung), int(step)) for rung, step, *_ in rows] == [(0, 10), (1, 20)]
    for _, step, reached, promoted, stopped in rows:
        numbers = {int(n.lstrip("#")) for n in stopped.split(", ") if n}
        went_on = {int(n.lstrip("#")) for n in promoted.split(", ") if n}
        assert int(reached) == sum(1 for *_, b in trials if b >= int(step))
        assert numbers == {n for n, state, b in trials if state == "STOPPED" and b == int(step)}
        assert went_on == {n for n, _, b in trials if b > int(step)}


RECOVERS_ONCE = textwrap.dedent(
    """
    import os
    import signal
    from pathlib import Path

    from trainyard.models import build_model


    def build(num_features, num_classes):
        model = build_model("mlp", num_features=num_features, num_classes=num_classes)
        original, calls = model.forward, {"n": 0}
        marker = Path(os.environ["CRASH_MARKER"])

        def forward(*args):
            calls["n"] += 1
            if model.training and calls["n"] > 12 and not marker.exists():
                marker.touch()
                print("recovers_once: crashing this attempt", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args)

        model.forward = forward
        return model
    """
)


def test_a_crashed_trial_is_retried_from_its_checkpoint(
    toy_data, write_experiment, tmp_path
) -> None:
    (tmp_path / "recovers_once.py").write_text(RECOVERS_ONCE)
    home = tmp_path / "home"
    config = {**experiment(toy_data), "model": "recovers_once:build", "max_restarts": 1}
    env = cli_env(home, PYTHONPATH=str(tmp_path), CRASH_MARKER=str(tmp_path / "crashed"))
    result = run_cli(["run", str(write_experiment(config))], env)
    assert result.returncode == 0, result.stdout + result.stderr
    ((_, state, restarts, _),) = _trials(home)
    assert (state, restarts) == ("COMPLETED", 1)
    log = run_cli(["logs", "1"], cli_env(home)).stdout
    assert "recovers_once: crashing this attempt" in log
    assert "resumed from" in log and "step-00000010" in log


def test_killed_master_resumes_the_search_and_ends_the_orphaned_workers(
    toy_data, write_experiment, tmp_path
) -> None:
    home = tmp_path / "home"
    config = _search(
        toy_data, {"name": "random", "max_trials": 4}, resources={"max_concurrent_trials": 1}
    )
    file = write_experiment(config)
    cli = start_cli(["run", str(file)], cli_env(home))

    def one_done_one_running() -> bool:
        states = [s for _, s, _, _ in _trials(home)] if (home / "trainyard.db").exists() else []
        return "COMPLETED" in states and "RUNNING" in states

    wait_for(one_done_one_running, timeout=300, what="a finished and a running trial")
    finished_before = [t for t in _trials(home) if t[1] == "COMPLETED"]
    orphans = _running_worker_keys(home)
    assert orphans, "a worker was running when the Master was killed"
    os.killpg(cli.pid, signal.SIGKILL)  # the Master only: its workers live on as orphans
    cli.wait()
    assert all(_alive(pid) for pid in orphans)

    resumed = run_cli(["run", "--resume", "search"], cli_env(home))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for pid in orphans:
        assert f"ending leftover worker pid {pid}" in resumed.stderr
        assert not _alive(pid)
    after = _trials(home)
    assert [state for _, state, _, _ in after] == ["COMPLETED"] * 4
    for trial in finished_before:
        assert trial in after, "a finished trial was rerun"


def _running_worker_keys(home: Path) -> list[int]:
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            return [
                t.worker_key
                for t in repository.list_trials(session, experiment_id=1)
                if t.state.value == "RUNNING" and t.worker_key is not None
            ]
    finally:
        store.close()


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (zombies are already dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
