"""Helpers for end-to-end runs: experiment files, the CLI as a process, waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from trainyard.settings import Settings
from trainyard.store import open_store, repository

T = TypeVar("T")

CLI = [sys.executable, "-c", "from trainyard.cli.app import main; main()"]


def experiment(toy_data: Path, **overrides: Any) -> dict[str, Any]:
    """A small, fast ParticleNet-Lite experiment; `overrides` replace whole top-level sections."""
    base: dict[str, Any] = {
        "name": "e2e",
        "model": {"name": "particlenet-lite", "options": {"k": 4}},
        "data": {
            "train": str(toy_data / "train" / "*.parquet"),
            "val": str(toy_data / "val" / "*.parquet"),
            "max_particles": 16,
        },
        "hyperparameters": {"lr": 0.003, "batch_size": 64},
        "training": {
            "max_length": {"batches": 40},
            "validation_period": {"batches": 20},
            "log_period_batches": 5,
            "seed": 3,
        },
        "checkpoint": {"period": {"batches": 5}, "keep": 3},
    }
    return {**base, **overrides}


EXAMPLES = Path(__file__).parents[2] / "examples"


def weaver_example(toy_data: Path, example: str) -> dict[str, Any]:
    """An example experiment with a weaver data config, on the toy set with a small
    ParticleNet-Lite; the example's data config keeps its place under examples/."""
    config = yaml.safe_load((EXAMPLES / example).read_text())
    config["data"].update(
        train=str(toy_data / "train" / "*.parquet"),
        val=str(toy_data / "val" / "*.parquet"),
        config=str(EXAMPLES.parent / config["data"]["config"]),
    )
    config["model"] = {
        "name": "particlenet-lite",
        "options": {"k": 4, "conv_channels": [[16, 16, 16], [32, 32, 32]], "fc_dim": 64},
    }
    return config


def short_training(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` trained for 24 batches of 64 jets at a constant lr of 0.003, validated and
    checkpointed once at the end: enough for a tiny model to learn the toy set."""
    config["hyperparameters"] = {"lr": 0.003, "batch_size": 64}
    config["training"].update(
        max_length={"batches": 24},
        validation_period={"batches": 24},
        lr_schedule={"name": "constant"},
        log_period_batches=8,
    )
    config["checkpoint"] = {"period": {"batches": 24}, "keep": 1}
    return config


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `trainyard` process with its own home and fast failure detection."""
    env = {
        **os.environ,
        "TRAINYARD_HOME": str(home),
        "TRAINYARD_HEARTBEAT_INTERVAL_S": "0.5",
        "TRAINYARD_POLL_INTERVAL_S": "0.2",
        "TRAINYARD_STOP_GRACE_S": "30",
        "COLUMNS": "200",
    }
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 900, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def checkpoint_steps(home: Path) -> list[int]:
    """Steps of the complete checkpoints under a trainyard home, ascending."""
    return sorted(
        int(p.name.split("-")[1]) for p in home.glob("experiments/*/trials/*/checkpoints/step-*")
    )


def last_validation(home: Path, trial_id: int) -> dict[str, float]:
    """The newest validation metrics a trial reported, read from the store under `home`."""
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            metric = repository.latest_metrics(session, trial_id=trial_id, kind="validation")
            assert metric is not None, f"trial {trial_id} reported no validation"
            return dict(metric.values)
    finally:
        store.close()


def stored_trials(home: Path, view: Callable[[Any, Any], T]) -> list[T]:
    """`view(session, trial)` of each trial of the first experiment under `home`, in order;
    empty while the CLI has not written its experiment yet."""
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            experiments = repository.list_experiments(session)
            if not experiments:
                return []
            trials = repository.list_trials(session, experiment_id=experiments[0].id)
            return [view(session, trial) for trial in trials]
    finally:
        store.close()


def run_by_hand(command: list[str], cwd: Path, timeout: float = 300) -> str:
    """A script run by hand (trainyard.core's local mode: no TRAINYARD_* variables); its
    output, after checking that it succeeded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def local_reports(folder: Path) -> list[tuple[str, int, dict[str, float]]]:
    """(kind, step, values) of each report a local-mode run wrote under `folder`."""
    lines = (folder / "trainyard-local" / "metrics.jsonl").read_text().splitlines()
    return [(r["kind"], r["step"], r["values"]) for r in map(json.loads, lines)]


def trial_progress(home: Path) -> list[tuple[str, list[int], int]]:
    """Each trial's state, the steps of its validations, and how many checkpoints it has."""

    def view(session: Any, trial: Any) -> tuple[str, list[int], int]:
        validations = repository.list_metrics(session, trial_id=trial.id, kind="validation")
        checkpoints = repository.list_checkpoints(session, trial_id=trial.id)
        return trial.state, [m.batches for m in validations], len(checkpoints)

    return stored_trials(home, view)
