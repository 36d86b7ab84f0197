"""Script trials end to end: `trainyard run` starts the user's own command, which speaks to
the real Master through trainyard.core (no mocks): ASHA stops one early, a SIGKILLed one
resumes from its last registered checkpoint, two ranks get torchrun's variables, and a
script that fails or never reports the searcher's metric is an errored trial that says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import EXAMPLES, cli_env, run_cli, stored_trials
from trainyard.store import repository

pytestmark = pytest.mark.integration

PLAIN_DDP = EXAMPLES / "scripts" / "plain-ddp"

SCRIPT = textwrap.dedent(
    """
    import json, os, pathlib, signal, sys, tempfile

    import trainyard.core

    out = pathlib.Path(os.environ["SCRIPT_OUT"])
    mode = os.environ.get("SCRIPT_MODE", "train")
    if mode == "fail":  # the first attempt fails, the retry never uses trainyard.core
        if not (out / "failed-once").exists():
            (out / "failed-once").touch()
            print("script: giving up now", flush=True)
            sys.exit(3)
        sys.exit(0)
    with trainyard.core.init(hparams={"steps": 6}) as ctx:
        rank = ctx.distributed.rank
        seen = {name: os.environ.get(name) for name in (
            "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
            "MASTER_PORT", "TRAINYARD_TRIAL_ID")}
        seen.update(ctx_rank=rank, ctx_size=ctx.distributed.size, chief=ctx.distributed.is_chief)
        (out / f"rank-{seen['TRAINYARD_TRIAL_ID']}-{rank}.json").write_text(json.dumps(seen))
        # The first trial of the search scores best; later ones worse (ASHA stops them).
        trial = int(os.environ["TRAINYARD_TRIAL_ID"])
        (out / f"trial-{trial}").touch()
        first = min(int(p.name.split("-")[1]) for p in out.glob("trial-*"))
        score = 1.0 if trial == first else 0.1
        latest = ctx.checkpoint.latest()
        start = latest.step + 1 if latest else 1
        print(f"starting at step {start}", flush=True)
        for step in range(start, int(ctx.hparams["steps"]) + 1):
            ctx.report_training(step, {"loss": 1.0 / step})
            if rank == 0:
                folder = pathlib.Path(tempfile.mkdtemp(dir=out))
                (folder / "state.json").write_text(json.dumps({"step": step}))
                ctx.checkpoint.save(folder, step)
            name = "other" if mode == "wrong-metric" else "score"
            ctx.report_validation(step, {name: score})
            if mode == "die" and latest is None and step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            if ctx.should_stop():
                print(f"stopping cleanly at step {step}", flush=True)
                break
    """
)


@pytest.fixture
def script_run(tmp_path: Path) -> Callable[..., tuple[Any, Path]]:
    """Write the script and an experiment running it; `trainyard run` it."""
    (tmp_path / "train.py").write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()

    def run(mode: str = "train", **overrides: Any) -> tuple[Any, Path]:
        config = {
            "name": f"script-{mode}",
            "entrypoint": {
                "command": "python train.py",
                "workdir": str(tmp_path),
                "environment": {"SCRIPT_OUT": str(out), "SCRIPT_MODE": mode},
            },
            "searcher": {"name": "single", "metric": "score"},
            **overrides,
        }
        file = tmp_path / "experiment.yaml"
        file.write_text(json.dumps(config))
        home = tmp_path / "home"
        result = run_cli(["run", str(file)], cli_env(home), timeout=300)
        return result, home

    return run


def _trials(home: Path) -> list[Any]:
    return stored_trials(home, lambda _s, trial: trial)


def _training_steps(home: Path, trial_id: int) -> list[int]:
    def steps(session: Any, trial: Any) -> list[int]:
        metrics = repository.list_metrics(session, trial_id=trial.id, kind="training")
        return [m.batches for m in metrics]

    return stored_trials(home, steps)[[t.id for t in _trials(home)].index(trial_id)]


def test_asha_stops_a_script_trial_that_exits_cleanly(script_run) -> None:
    result, home = script_run(
        hyperparameters={"x": {"type": "int", "min": 0, "max": 9}},
        searcher={
            "name": "asha",
            "metric": "score",
            "max_trials": 2,
            "asha": {"min_batches": 1, "reduction_factor": 2},
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = _trials(home)
    assert (first.state, second.state) == ("COMPLETED", "STOPPED")
    log = Path(second.log_path).read_text()
    assert "stopping cleanly at step 1" in log
    assert second.num_restarts == 0 and second.error is None


def test_a_sigkilled_script_resumes_from_its_last_registered_checkpoint(script_run) -> None:
    result, home = script_run("die", max_restarts=1)
    assert result.returncode == 0, result.stdout + result.stderr
    (trial,) = _trials(home)
    assert trial.state == "COMPLETED" and trial.num_restarts == 1
    log = Path(trial.log_path).read_text()
    assert "starting at step 1" in log and "starting at step 4" in log
    # Steps 1-3 from the first attempt, 4-6 from the resumed one: none trained twice.
    assert _training_steps(home, trial.id) == [1, 2, 3, 4, 5, 6]


def test_two_ranks_get_torchruns_variables_and_only_the_chief_reports(
    script_run, tmp_path: Path
) -> None:
    result, home = script_run(resources={"slots_per_trial": 2})
    assert result.returncode == 0, result.stdout + result.stderr
    (trial,) = _trials(home)
    assert trial.state == "COMPLETED"
    ranks = [
        json.loads((tmp_path / "out" / f"rank-{trial.id}-{r}.json").read_text()) for r in (0, 1)
    ]
    for rank, seen in enumerate(ranks):
        assert seen["RANK"] == str(rank) and seen["LOCAL_RANK"] == str(rank)
        assert seen["WORLD_SIZE"] == "2" and seen["LOCAL_WORLD_SIZE"] == "2"
        assert seen["MASTER_ADDR"] and seen["MASTER_PORT"]
        assert (seen["ctx_rank"], seen["ctx_size"], seen["chief"]) == (rank, 2, rank == 0)
    assert _training_steps(home, trial.id) == [1, 2, 3, 4, 5, 6]  # once each: the chief's


def test_a_failing_script_is_an_errored_trial_with_its_log_tail(script_run) -> None:
    result, home = script_run("fail", max_restarts=1)
    assert result.returncode == 1
    (trial,) = _trials(home)
    assert trial.state == "ERRORED" and trial.num_restarts == 1
    assert "script 'python train.py': exited with code 3 without reporting" in result.stderr
    assert (
        "script 'python train.py': exited with code 0 without reporting an outcome; a script "
        "reports through trainyard.core: run its training inside "
        "`with trainyard.core.init() as ctx:`" in trial.error
    )
    assert "script: giving up now" in trial.error  # the log tail


def test_a_script_that_never_reports_the_searchers_metric_is_told_which(script_run) -> None:
    result, home = script_run(
        "wrong-metric",
        max_restarts=0,
        hyperparameters={"x": {"type": "int", "min": 0, "max": 9}},
        searcher={"name": "random", "metric": "score", "max_trials": 1},
    )
    assert result.returncode == 1
    (trial,) = _trials(home)
    assert trial.state == "ERRORED"
    assert (
        "the searcher ranks trials by `searcher.metric` 'score', but the validation at step 1 "
        "reported only other" in trial.error
    )


def test_the_plain_ddp_example_runs_by_hand_and_as_an_asha_search(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    by_hand = [
        sys.executable,
        str(PLAIN_DDP / "train.py"),
        "--steps",
        "4",
        "--validate-every",
        "2",
    ]
    subprocess.run(by_hand, cwd=tmp_path, env=env, check=True, timeout=120)
    lines = (tmp_path / "trainyard-local" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 2, 3, 4, 4]

    config = yaml.safe_load((PLAIN_DDP / "experiment.yaml").read_text())
    config["entrypoint"]["workdir"] = str(PLAIN_DDP)
    config["entrypoint"]["command"] = "python train.py --steps 20 --validate-every 10"
    config["searcher"]["max_trials"] = 2
    file = tmp_path / "plain-ddp.yaml"
    file.write_text(yaml.safe_dump(config))
    result = run_cli(["run", str(file)], cli_env(tmp_path / "home"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = _trials(tmp_path / "home")
    assert len(trials) == 2 and {t.state for t in trials} <= {"COMPLETED", "STOPPED"}
    assert "best val_accuracy at batch" in result.stdout
