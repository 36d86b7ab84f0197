"""`trainyard run` into a log file: progress lines as they happen, whole paths, literal text."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import MARKUP
from tests.integration.helpers import CLI, cli_env, experiment, run_cli, wait_for
from trainyard.master.service import MasterService
from trainyard.settings import Settings
from trainyard.store import open_store

pytestmark = pytest.mark.integration

USER_MODELS = textwrap.dedent(
    """
    import time
    from pathlib import Path

    import torch

    from trainyard.models import build_model

    GATE = Path(__file__).parent / "gate"


    def gated(num_features, num_classes):
        \"\"\"An MLP whose 21st training step waits until the test creates GATE.\"\"\"
        model = build_model("mlp", num_features=num_features, num_classes=num_classes)
        original = model.forward
        steps = {"done": 0}

        def forward(*args):
            if torch.is_grad_enabled():
                steps["done"] += 1
                while steps["done"] > 20 and not GATE.exists():
                    time.sleep(0.05)
            return original(*args)

        model.forward = forward
        return model


    def marked_up(num_features, num_classes):
        \"\"\"An MLP that passes preflight's interface check (eval mode), then in training
        logs text rich would read as markup and fails.\"\"\"
        model = build_model("mlp", num_features=num_features, num_classes=num_classes)
        checked_forward = model.forward

        def forward(*args):
            if not model.training:
                return checked_forward(*args)
            print(MARKUP_LINES, flush=True)
            raise RuntimeError("failing on purpose [/x]")

        model.forward = forward
        return model
    """
)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A CLI environment that finds the models above, with a home deep enough for long paths
    and no COLUMNS hint (as in a batch job)."""
    text = USER_MODELS + f"\nMARKUP_LINES = {chr(10).join(MARKUP)!r}\n"
    (tmp_path / "user_models.py").write_text(text)
    home = tmp_path / "home-of-a-facility-user-with-a-long-name"
    env = cli_env(home, PYTHONPATH=str(tmp_path), TRAINYARD_HEARTBEAT_TIMEOUT_S="600")
    env.pop("COLUMNS")
    return env


def test_run_into_a_file_prints_progress_lines_as_they_happen(
    tmp_path: Path,
    toy_data: Path,
    write_experiment: Callable[[dict[str, Any]], Path],
    user_env: dict[str, str],
) -> None:
    file = write_experiment(experiment(toy_data, model="user_models:gated", max_restarts=0))
    log = tmp_path / "run.log"
    with log.open("w") as out, (tmp_path / "run.err").open("w") as err:
        process = subprocess.Popen([*CLI, "run", str(file)], env=user_env, stdout=out, stderr=err)
    try:
        wait_for(
            lambda: "validation step 20/40" in log.read_text(),
            timeout=240,
            what=f"a validation line in {log}",
        )
        # The worker waits at the gate, so the run cannot have ended: these lines came live.
        assert process.poll() is None
        before_gate = log.read_text()
        (tmp_path / "gate").touch()
        assert process.wait(timeout=240) == 0, (tmp_path / "run.err").read_text()
    finally:
        _stop(process, gate=tmp_path / "gate")
    lines = _without_time_of_day(log.read_text())
    assert "experiment 1 COMPLETED" not in before_gate
    order = [
        "trial 0 (id 1) launched: ",
        # A tick prints the newest training report, so which step comes first depends on timing.
        "trial 0 (id 1) training step ",
        "trial 0 (id 1) validation step 20/40: val_auc ",
        "trial 0 (id 1) validation step 40/40: val_auc ",
        "trial 0 (id 1) COMPLETED at step 40/40; best val_auc ",
        "experiment 1 COMPLETED after ",
    ]
    found = [[i for i, line in enumerate(lines) if line.startswith(o)] for o in order]
    assert all(found), f"a line is missing from:\n{log.read_text()}"
    assert [f[0] for f in found] == sorted(f[0] for f in found), log.read_text()
    assert "lr=0.003" in lines[found[0][0]] and "batch_size=64" in lines[found[0][0]]
    first_training = lines[found[1][0]]
    assert re.match(r"trial 0 \(id 1\) training step (5|10|15|20)/40: loss \d", first_training)

    settings = Settings(home=Path(user_env["TRAINYARD_HOME"]))
    store = open_store(settings.resolved_database_url())
    try:
        checkpoint = MasterService(store, settings).latest_checkpoint_path(1)
    finally:
        store.close()
    assert checkpoint is not None and len(checkpoint) > 80
    assert f"  checkpoint: {checkpoint}" in lines


def test_a_failed_trial_prints_its_log_tail_literally(
    toy_data: Path,
    write_experiment: Callable[[dict[str, Any]], Path],
    user_env: dict[str, str],
) -> None:
    file = write_experiment(experiment(toy_data, model="user_models:marked_up", max_restarts=0))
    result = run_cli(["run", str(file)], user_env, timeout=240)
    assert result.returncode == 1, result.stderr
    lines = _without_time_of_day(result.stdout)
    assert any(
        line.startswith("trial 0 (id 1) ERRORED at step 0")
        and line.endswith(": RuntimeError: failing on purpose [/x]")
        for line in lines
    ), result.stdout
    for text in MARKUP:
        assert text in lines, f"{text!r} is not a line of:\n{result.stdout}"
    assert "MarkupError" not in result.stdout + result.stderr


def _stop(process: subprocess.Popen[bytes], *, gate: Path) -> None:
    """After a failed assertion too: open the gate and pause the run, so no worker is left."""
    gate.touch()
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # the CLI stops its workers, then exits
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _without_time_of_day(output: str) -> list[str]:
    """Output lines, progress lines without their leading HH:MM:SS."""
    return [
        line[9:] if len(line) > 9 and line[2] == line[5] == ":" else line
        for line in output.splitlines()
    ]
