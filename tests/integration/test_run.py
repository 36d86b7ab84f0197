"""`trainyard run` end to end: real Master, real worker processes, real files and SQLite."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from tests.integration.helpers import (
    checkpoint_steps,
    cli_env,
    experiment,
    run_cli,
    start_cli,
    wait_for,
)
from trainyard.settings import Settings
from trainyard.store import TrialState, WorkerCredential, open_store, repository

pytestmark = pytest.mark.integration

MAX_BATCHES = 150
"""The Ctrl-C test's run: Ctrl-C comes at the second checkpoint (batch 10), and the 140 batches
left give the pause seconds to land mid-run; the resume trains the rest."""


def _trials(home: Path) -> list[tuple[str, str | None, int | None]]:
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            experiment_id = repository.list_experiments(session)[0].id
            return [
                (t.state.value, t.error, t.worker_key)
                for t in repository.list_trials(session, experiment_id=experiment_id)
            ]
    finally:
        store.close()


def _final_weights(home: Path) -> dict[str, torch.Tensor]:
    newest = max(home.glob("experiments/*/trials/*/checkpoints/step-*"))
    return torch.load(newest / "state.pt", weights_only=True)["model"]


def test_run_trains_reports_and_summarises(finished_run) -> None:
    home, result = finished_run.home, finished_run.result
    assert "experiment 1 COMPLETED" in result.stdout
    assert "best val_auc at batch" in result.stdout
    # Output to a pipe (a log): the dashboard's sign-in link goes to a private file instead.
    link_file = home / "dashboard.url"
    assert f"dashboard: the sign-in link is in {link_file}" in result.stdout
    assert "token=" not in result.stdout and "/login?token=" in link_file.read_text()
    assert link_file.stat().st_mode & 0o777 == 0o600
    assert _trials(home)[0][0] == TrialState.COMPLETED
    assert checkpoint_steps(home)[-1] == 40
    shown = run_cli(["show", "e2e"], cli_env(home))
    assert "COMPLETED" in shown.stdout and "40/40" in shown.stdout
    listed = run_cli(["list"], cli_env(home))
    assert "e2e" in listed.stdout
    log = run_cli(["logs", "1"], cli_env(home))
    assert "validation at batch 40" in log.stdout
    # The worker keeps freed memory mapped (worker/allocator.py), so steps do not re-fault it.
    assert "malloc: freed memory stays in the heap" in log.stdout


def test_sigkilled_run_resumes_from_its_checkpoint_to_bit_identical_weights(
    toy_data, write_experiment, tmp_path
) -> None:
    config = experiment(
        toy_data, training={**experiment(toy_data)["training"], "max_length": {"batches": 60}}
    )
    file = write_experiment(config)
    uninterrupted = tmp_path / "uninterrupted"
    assert run_cli(["run", str(file)], cli_env(uninterrupted)).returncode == 0

    interrupted = tmp_path / "interrupted"
    cli = start_cli(["run", str(file)], cli_env(interrupted))
    wait_for(
        lambda: any(s >= 15 for s in checkpoint_steps(interrupted)), timeout=300, what="step 15"
    )
    worker_key = _trials(interrupted)[0][2]
    assert worker_key is not None
    os.killpg(worker_key, signal.SIGKILL)
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    killed_at = max(checkpoint_steps(interrupted))
    assert killed_at < 60, "the run finished before it was killed"

    resumed = run_cli(["run", "--resume", "e2e"], cli_env(interrupted))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The second attempt started at the checkpoint's step, and trained only what was left.
    log = run_cli(["logs", "1"], cli_env(interrupted)).stdout
    assert f"step-{killed_at:08d} at batch {killed_at} " in log
    second = _training_reports_of_attempt(interrupted, attempt=2)
    assert second and min(second) > killed_at
    assert len(second) == (60 - killed_at) // 5 < 60 // 5
    expected, actual = _final_weights(uninterrupted), _final_weights(interrupted)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def _training_reports_of_attempt(home: Path, *, attempt: int) -> list[int]:
    """Steps of the training reports the worker of `attempt` sent (after it was issued)."""
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            (trial,) = repository.list_trials(session, experiment_id=1)
            issued = session.scalars(
                select(WorkerCredential.issued_at).where(
                    WorkerCredential.trial_id == trial.id, WorkerCredential.attempt == attempt
                )
            ).one()
            reports = repository.list_metrics(session, trial_id=trial.id, kind="training")
            return [m.batches for m in reports if m.reported_at > issued]
    finally:
        store.close()


def test_ctrl_c_checkpoints_pauses_and_resume_completes(
    toy_data, write_experiment, tmp_path
) -> None:
    home = tmp_path / "home"
    config = experiment(
        toy_data,
        training={**experiment(toy_data)["training"], "max_length": {"batches": MAX_BATCHES}},
    )
    file = write_experiment(config)
    cli = start_cli(["run", str(file)], cli_env(home))
    # Two checkpoints before Ctrl-C: the pause may land on the step just saved and write none,
    # and the resume below needs an older one to fall back to when the newest is truncated.
    wait_for(lambda: len(checkpoint_steps(home)) >= 2, timeout=120, what="two checkpoints")
    cli.send_signal(signal.SIGINT)
    output, _ = cli.communicate(timeout=120)
    assert cli.returncode == 130, output
    assert "resume with: trainyard run --resume 1" in output
    state, _, _ = _trials(home)[0]
    assert state == TrialState.PAUSED
    paused_at = max(checkpoint_steps(home))
    assert paused_at < MAX_BATCHES, "the run finished before Ctrl-C paused it"

    newest = max(home.glob("experiments/*/trials/*/checkpoints/step-*"))
    state_file = newest / "state.pt"
    state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])
    resumed = run_cli(["run", "--resume", "1"], cli_env(home))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = run_cli(["logs", "1"], cli_env(home)).stdout
    assert f"{state_file}: size" in log and "(truncated); skipped" in log
    assert "resumed from" in log
    assert _trials(home)[0][0] == TrialState.COMPLETED
