"""trainyard.core: torch-free, a local mode for runs by hand, checkpoints registered whole,
and a real Master that refuses another trial's credential."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

import trainyard.core
from trainyard.cli.export import export_onnx_files
from trainyard.config import parse_experiment
from trainyard.core.checkpoints import MARKER, CheckpointStore
from trainyard.errors import CheckpointError, TrainyardError
from trainyard.master.api.app import create_app
from trainyard.master.server import EmbeddedServer
from trainyard.master.service import MasterService
from trainyard.protocol import ExperimentState, TrialState
from trainyard.settings import Settings
from trainyard.store import open_store
from trainyard.worker.client import CredentialRefusedError

LOCAL_SCRIPT = textwrap.dedent(
    """
    import sys, pathlib
    import trainyard.core

    with trainyard.core.init(hparams={"lr": 0.1, "steps": 3}, local_dir="run") as ctx:
        assert ctx.is_local and ctx.distributed.is_chief
        start = ctx.checkpoint.latest()
        print("start", start.step if start else None)
        for step in range(1, ctx.hparams["steps"] + 1):
            ctx.report_training(step, {"loss": 1.0 / step})
            ctx.report_validation(step, {"val_loss": 2.0 / step})
            folder = pathlib.Path(f"tmp-{step}")
            folder.mkdir()
            (folder / "w.txt").write_text(str(step))
            ctx.checkpoint.save(folder, step)
            assert not ctx.should_stop()
    assert "torch" not in sys.modules
    """
)


def test_importing_core_does_not_import_torch() -> None:
    code = "import trainyard.core, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _run_by_hand(folder: Path) -> str:
    """The script run as a person would: no trainyard variables in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    run = subprocess.run(
        [sys.executable, "train.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return run.stdout


def test_local_mode_writes_metrics_to_a_file_and_keeps_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(LOCAL_SCRIPT)
    assert "start None" in _run_by_hand(tmp_path)
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    assert [(r["kind"], r["step"]) for r in records] == [
        (kind, step) for step in (1, 2, 3) for kind in ("training", "validation")
    ]
    assert records[-1]["values"] == {"val_loss": pytest.approx(2.0 / 3)}
    kept = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert kept == ["step-00000002", "step-00000003"]  # keep: 2
    assert (tmp_path / "run/checkpoints/step-00000003/w.txt").read_text() == "3"
    assert "start 3" in _run_by_hand(tmp_path)  # the next run resumes


def test_a_checkpoint_folder_that_vanished_before_registration_is_named(tmp_path: Path) -> None:
    seen: list[list] = []
    store = CheckpointStore(tmp_path / "ckpt", keep=2, is_chief=True, on_change=seen.append)
    gone = tmp_path / "written-then-removed"
    with pytest.raises(CheckpointError) as caught:
        store.save(gone, 7)
    assert (
        f"ctx.checkpoint.save: checkpoint folder {gone} for step 7 does not exist (it was "
        "removed or renamed before it was registered); write the folder completely, then call "
        "ctx.checkpoint.save(folder, step)" in str(caught.value)
    )
    assert store.latest() is None and seen == []


def test_only_whole_checkpoints_count_and_a_resaved_step_replaces_the_old(tmp_path: Path) -> None:
    seen: list[list] = []
    store = CheckpointStore(tmp_path / "ckpt", keep=3, is_chief=True, on_change=seen.append)
    for step in (1, 2, 3):
        folder = tmp_path / f"w{step}"
        folder.mkdir()
        (folder / "v").write_text(str(step))
        store.save(folder, step)
        assert not folder.exists()
    (tmp_path / "ckpt/step-00000009").mkdir()  # no marker: a torn copy, never registered
    assert [c.step for c in store.list()] == [1, 2, 3]
    again = tmp_path / "again"
    again.mkdir()
    (again / "v").write_text("resumed")
    store.save(again, 2)  # a resumed run saves step 2 again: step 3 belonged to the old run
    assert [c.step for c in store.list()] == [1, 2]
    assert (tmp_path / "ckpt/step-00000002/v").read_text() == "resumed"
    assert json.loads((tmp_path / "ckpt/step-00000002" / MARKER).read_text()) == {"step": 2}
    assert [e.batches for e in seen[-1]] == [1, 2]
    other_rank = CheckpointStore(tmp_path / "ckpt", keep=3, is_chief=False, on_change=seen.append)
    assert other_rank.save(tmp_path, 5) is None and other_rank.latest().step == 2


@pytest.fixture
def master(tmp_path: Path) -> Iterator[tuple[MasterService, str, list[int]]]:
    """A real Master over HTTP with a script experiment of two running trials."""
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings.resolved_database_url())
    service = MasterService(store, settings)
    config = parse_experiment(
        {
            "name": "scripts",
            "entrypoint": "python train.py",
            "hyperparameters": {"x": {"type": "categorical", "vals": [1, 2]}},
            "searcher": {"name": "grid", "metric": "score"},
        }
    )
    experiment_id = service.create_experiment(config)
    service.set_experiment_state(experiment_id, ExperimentState.RUNNING)
    trial_ids = service.create_trials(experiment_id, num_free=2)
    for trial_id in trial_ids:
        service.update_trial(trial_id, state=TrialState.RUNNING)
    server = EmbeddedServer(create_app(service, admin_token="admin"))
    server.start()
    yield service, server.url, trial_ids
    server.stop()
    store.close()


def _as_trial(monkeypatch: pytest.MonkeyPatch, url: str, trial_id: int, token: str) -> None:
    monkeypatch.setenv("TRAINYARD_MASTER_URL", url)
    monkeypatch.setenv("TRAINYARD_TRIAL_ID", str(trial_id))
    monkeypatch.setenv("TRAINYARD_TOKEN", token)


def test_another_trials_credential_is_refused_by_the_master(master, monkeypatch) -> None:
    service, url, (mine, other) = master
    _as_trial(monkeypatch, url, mine, service.issue_worker_token(other))
    with pytest.raises(CredentialRefusedError) as caught:
        trainyard.core.init()
    assert (
        f"the Master refused GET /spec: this worker credential belongs to trial {other} "
        f"(attempt 1); it reaches only that trial's worker endpoints, not trial {mine}'s"
        in str(caught.value)
    )
    assert service.trial_metrics(mine) == []


def test_a_trial_reports_and_registers_checkpoints_through_the_master(
    master, monkeypatch, tmp_path: Path
) -> None:
    service, url, (mine, _other) = master
    _as_trial(monkeypatch, url, mine, service.issue_worker_token(mine))
    with trainyard.core.init(hparams={"x": 0, "epochs": 3}) as ctx:
        assert dict(ctx.hparams) == {
            "x": service.get_trial(mine).hyperparameters["x"],
            "epochs": 3,
        }
        ctx.report_validation(10, {"score": 0.5})
        folder = tmp_path / "weights"
        folder.mkdir()
        saved = ctx.checkpoint.save(folder, 10)
        assert not ctx.should_stop()
    assert [c.path for c in service.trial_checkpoints(mine)] == [str(saved.path)]
    assert service.trial_metrics(mine)[0].values == {"score": 0.5}
    assert service.get_trial(mine).state == TrialState.COMPLETED
    with pytest.raises(TrainyardError) as caught:  # trainyard does not know a script's model
        export_onnx_files(
            service,
            trial_id=mine,
            folder=tmp_path / "onnx",
            which="latest",
            opset=17,
            console=Console(),
        )
    assert (
        f"is a script trial: trainyard does not know its model, so it cannot export it; its "
        f"newest checkpoint folder is {saved.path}, which your own code can export"
    ) in str(caught.value)


def _script_trial_fails(service, trial_id: int, message: str) -> None:
    trial = service.get_trial(trial_id)
    assert trial.state == TrialState.ERRORED and message in (trial.error or "")


def test_a_script_that_never_validates_with_the_searchers_metric_is_errored(
    master, monkeypatch
) -> None:
    service, url, (mine, other) = master
    _as_trial(monkeypatch, url, mine, service.issue_worker_token(mine))
    with trainyard.core.init() as ctx:
        ctx.report_training(1, {"loss": 1.0})
    _script_trial_fails(
        service,
        mine,
        "the script ended without reporting `searcher.metric` 'score' in any "
        "ctx.report_validation, so the searcher cannot rank this trial",
    )
    _as_trial(monkeypatch, url, other, service.issue_worker_token(other))
    with pytest.raises(SystemExit), trainyard.core.init():
        sys.exit(5)
    _script_trial_fails(
        service, other, "the script called sys.exit(5) inside trainyard.core.init()"
    )


def test_core_refuses_a_builtin_models_trial(master, monkeypatch, tmp_path: Path) -> None:
    service, url, _trials = master
    config = parse_experiment(
        {
            "name": "zoo",
            "model": "mlp",
            "data": {"train": str(tmp_path / "t"), "val": str(tmp_path / "v")},
            "training": {"max_length": {"batches": 1}},
        }
    )
    experiment_id = service.create_experiment(config)
    (trial_id,) = service.create_trials(experiment_id, num_free=1)
    _as_trial(monkeypatch, url, trial_id, service.issue_worker_token(trial_id))
    with pytest.raises(TrainyardError) as caught:
        trainyard.core.init()
    assert (
        f"trial {trial_id} trains a built-in model, not a script; trainyard.core is for "
        "experiments with an `entrypoint`" in str(caught.value)
    )


def test_bad_steps_and_rank_variables_are_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TRAINYARD_TRIAL_ID", raising=False)
    with trainyard.core.init(local_dir=tmp_path) as ctx:
        with pytest.raises(
            TrainyardError,
            match=r"report_training: step must be a whole "
            r"number >= 0, not -1",
        ):
            ctx.report_training(-1, {"loss": 1.0})
        with pytest.raises(
            TrainyardError, match=r"report_validation: epoch must be a number >= 0, not -0.5"
        ):
            ctx.report_validation(3, {"loss": 1.0}, epoch=-0.5)
        ctx.report_training(3, {"loss": 1.0}, epoch=1)
        (record,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert (record["step"], record["epoch"]) == (3, 1.0)
        with pytest.raises(
            CheckpointError,
            match=r"save: step must be a whole number >= 0, "
            r"not 2.5",
        ):
            ctx.checkpoint.save(tmp_path, 2.5)
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(
        ValueError, match="RANK must be a whole number as torchrun sets it, not 'first'"
    ):
        trainyard.core.init(local_dir=tmp_path)


def test_the_builtin_worker_refuses_a_script_trial(master, tmp_path: Path) -> None:
    service, url, (mine, _other) = master
    env = {
        **os.environ,
        "TRAINYARD_MASTER_URL": url,
        "TRAINYARD_TRIAL_ID": str(mine),
        "TRAINYARD_TOKEN": service.issue_worker_token(mine),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "trainyard.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert worker.returncode == 1
    assert (
        f"trial {mine} is a script trial (entrypoint 'python train.py'); its executor runs "
        "that command, not trainyard.worker" in worker.stderr
    )
