"""Packed searches through `trainyard run`: several trials in one worker, each an ordinary trial.

Real processes, the real store and the local executor: the same grid search packed and not
packed ends with the same weights; the searcher's stop ends one member while the others go
on, and a queued trial joins the running pack in the place it left; a SIGKILLed pack's
members resume from their own checkpoints.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.helpers import (
    cli_env,
    experiment,
    run_cli,
    start_cli,
    wait_for,
)
from tests.integration.packs import SLOW_MODEL, packed_trials

pytestmark = pytest.mark.integration


def _grid(toy_data: Path, *, pack: int | str, **overrides: Any) -> dict[str, Any]:
    """A grid over learning rates of a dropout-free MLP with SGD: exact under packing."""
    base = experiment(toy_data)
    return {
        **base,
        "name": "packed",
        "model": {"name": "mlp", "options": {"dropout": 0.0}},
        "hyperparameters": {
            "lr": {"type": "categorical", "vals": [0.01, 0.03, 0.1]},
            "batch_size": 64,
        },
        "searcher": {"name": "grid"},
        "resources": {"max_concurrent_trials": 3, "pack": pack},
        "training": {
            **base["training"],
            "max_length": {"batches": 30},
            "validation_period": {"batches": 10},
            "optimizer": {"name": "sgd", "momentum": 0.9},
        },
        **overrides,
    }


def _newest_checkpoint(home: Path, number: int) -> Path:
    return sorted(home.glob(f"experiments/*/trials/{number:04d}/checkpoints/step-*"))[-1]


def _final_weights(home: Path, number: int) -> dict[str, torch.Tensor]:
    folder = _newest_checkpoint(home, number)
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    return state["model"]


def _logs(home: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(home.glob("experiments/*/trials/*/*.log")))


def test_packed_grid_ends_with_the_weights_of_the_solo_grid(
    toy_data, write_experiment, tmp_path
) -> None:
    """With dropout: each member draws its solo trial's masks from its own generator."""
    homes = {}
    for pack in ("off", 2):
        homes[pack] = home = tmp_path / f"home-{pack}"
        dropping = {"name": "mlp", "options": {"dropout": 0.3}}
        config = _grid(toy_data, pack=pack, name=f"grid-{pack}", model=dropping)
        result = run_cli(["run", str(write_experiment(config))], cli_env(home), timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        trials = packed_trials(home)
        assert [t.state for t in trials] == ["COMPLETED"] * 3
        for trial in trials:  # each its own metrics and checkpoint
            assert trial.validations == [10, 20, 30]
            assert (Path(trial.log_path).parent / "checkpoints" / "step-00000030").is_dir()
    packed = packed_trials(homes[2])
    assert len({t.worker_key for t in packed}) == 2  # a pack of two, and one trial alone
    log = _logs(homes[2])
    assert log.count("pack of 2 trial(s) on cpu: trials 0, 1") == 1
    assert "trained in a pack with trials 0, 1" in log
    for number in range(3):
        solo, pack = _final_weights(homes["off"], number), _final_weights(homes[2], number)
        assert solo.keys() == pack.keys()
        for name in solo:
            torch.testing.assert_close(pack[name], solo[name], rtol=1e-5, atol=1e-6)


def test_the_searcher_stops_one_member_and_the_others_go_on(
    toy_data, write_experiment, tmp_path
) -> None:
    home = tmp_path / "home"
    config = _grid(
        toy_data,
        pack=2,
        name="asha",
        hyperparameters={"lr": {"type": "log", "min": 1e-5, "max": 1.0}, "batch_size": 64},
        searcher={"name": "asha", "max_trials": 4, "asha": {"reduction_factor": 2}},
        resources={"max_concurrent_trials": 4, "pack": 2},
    )
    result = run_cli(["run", str(write_experiment(config))], cli_env(home), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = packed_trials(home)
    assert {t.state for t in trials} <= {"STOPPED", "COMPLETED"}
    by_pid: dict[int, list[Any]] = {}
    for trial in trials:
        by_pid.setdefault(trial.worker_key, []).append(trial)
    left_early = [
        (stopped, other)
        for members in by_pid.values()
        for stopped in members
        for other in members
        if stopped.state == "STOPPED" and other.batches_trained > stopped.batches_trained
    ]
    assert left_early, [(t.number, t.state, t.worker_key, t.batches_trained) for t in trials]
    left = r"trial \d+ stopped \(attempt 1; 1 trial\(s\) left in the pack\)"
    assert re.search(left, _logs(home))


def test_a_killed_pack_is_retried_and_a_paused_one_resumes_each_member_from_its_checkpoint(
    toy_data, write_experiment, tmp_path
) -> None:
    """SIGKILL the pack's worker: both members are retried (restart 1) from their own
    checkpoints; then pause the run (Ctrl-C): both checkpoint and pause; resume: both end."""
    (tmp_path / "slow_models.py").write_text(SLOW_MODEL)
    home = tmp_path / "home"
    env = cli_env(home, PYTHONPATH=str(tmp_path))
    config = _grid(
        toy_data,
        pack=2,
        name="killed",
        model="slow_models:slow_mlp",
        hyperparameters={"lr": {"type": "categorical", "vals": [0.01, 0.03]}, "batch_size": 64},
        resources={"max_concurrent_trials": 2, "pack": 2},
        training={**_grid(toy_data, pack=2)["training"], "max_length": {"batches": 60}},
        max_restarts=1,
    )
    cli = start_cli(["run", str(write_experiment(config))], env)
    try:
        wait_for(
            lambda: len(list(home.glob("experiments/*/trials/*/checkpoints/step-00000010"))) == 2,
            timeout=120,
            what="both members' checkpoints at batch 10",
        )
        (pid,) = {t.worker_key for t in packed_trials(home)}
        os.killpg(pid, signal.SIGKILL)
        wait_for(
            lambda: len(re.findall("resumed from", _logs(home))) == 2,
            timeout=120,
            what="the retried pack to resume both members",
        )
        os.kill(cli.pid, signal.SIGINT)
        output, _ = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 130, output
    assert [(t.state, t.num_restarts) for t in packed_trials(home)] == [("PAUSED", 1)] * 2
    for number in (0, 1):
        killed = rf"trial {number} \(id \d+\) .*worker was killed by signal SIGKILL without"
        assert re.search(killed, output), output
    paused_at = [_newest_checkpoint(home, number).name for number in (0, 1)]

    resumed = run_cli(["run", "--resume", "killed"], env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [t.state for t in packed_trials(home)] == ["COMPLETED"] * 2
    starts = [
        (int(number), int(step))
        for number, step in re.findall(
            r"resumed from \S+/(\d{4})/checkpoints/step-(\d+) ", _logs(home)
        )
    ]
    for number in (0, 1):  # each from its own checkpoints, never from 0
        steps = [step for n, step in starts if n == number]
        assert len(steps) == 2 and steps[0] >= 10, starts
        assert f"step-{steps[1]:08d}" == paused_at[number], (starts, paused_at)


def test_a_queued_trial_joins_the_pack_in_the_place_a_stopped_member_left(
    toy_data, write_experiment, tmp_path
) -> None:
    """ASHA with `pack: 2` and room for two trials: when a member ends, the next trial joins
    the running worker (same pid as the pack's host) instead of waiting for it to exit, and
    ends with its own metrics and checkpoints."""
    (tmp_path / "slow_models.py").write_text(SLOW_MODEL)  # steps slow enough to join
    home = tmp_path / "home"
    config = _grid(
        toy_data,
        pack=2,
        name="joins",
        model="slow_models:slow_mlp",
        hyperparameters={"lr": {"type": "log", "min": 1e-5, "max": 1.0}, "batch_size": 64},
        searcher={"name": "asha", "max_trials": 3, "asha": {"reduction_factor": 2}},
        resources={"max_concurrent_trials": 2, "pack": 2},
    )
    env = cli_env(home, PYTHONPATH=str(tmp_path))
    result = run_cli(["run", str(write_experiment(config))], env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = packed_trials(home)
    summary = [(t.number, t.state, t.worker_key, t.batches_trained) for t in trials]
    assert len(trials) == 3 and {t.state for t in trials} <= {"STOPPED", "COMPLETED"}, summary
    host_pid = trials[0].worker_key
    joined = [t for t in trials[2:] if t.worker_key == host_pid]
    assert joined, summary
    for trial in joined:  # an ordinary trial: its own validations and checkpoints
        assert trial.validations and trial.validations[0] == 10, summary
        folder = Path(trial.log_path).parent / "checkpoints"
        assert (folder / f"step-{trial.batches_trained:08d}").is_dir()
        assert "joined the pack of trial 0" in Path(trial.log_path).read_text()
    log = _logs(home)
    assert re.search(
        rf"trial {joined[0].number}: \S+: trial {joined[0].number} joined the pack", log
    )
