"""Workers that die or hang end as errored trials with their log tail; the CLI never hangs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.integration.helpers import cli_env, experiment, run_cli

pytestmark = pytest.mark.integration

FAULTY_MODELS = textwrap.dedent(
    """
    import os
    import signal
    import time

    from trainyard.models import build_model


    def _wrap(action_now, num_features, num_classes, after):
        model = build_model("mlp", num_features=num_features, num_classes=num_classes)
        original = model.forward
        state = {"calls": 0}

        def forward(*args):
            state["calls"] += 1
            if state["calls"] > after:
                print("faulty model: failing now", flush=True)
                action_now()
            return original(*args)

        model.forward = forward
        return model


    def dies(num_features, num_classes):
        return _wrap(lambda: os.kill(os.getpid(), signal.SIGKILL), num_features, num_classes, 3)


    def hangs(num_features, num_classes):
        return _wrap(lambda: time.sleep(3600), num_features, num_classes, 3)
    """
)


@pytest.fixture
def faulty_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "faulty_models.py").write_text(FAULTY_MODELS)
    return cli_env(tmp_path / "home", PYTHONPATH=str(tmp_path), TRAINYARD_HEARTBEAT_TIMEOUT_S="10")


def test_sigkilled_worker_is_an_errored_trial_with_log_tail(
    toy_data, write_experiment, faulty_env
) -> None:
    file = write_experiment(experiment(toy_data, model="faulty_models:dies", max_restarts=0))
    result = run_cli(["run", str(file)], faulty_env, timeout=120)
    assert result.returncode == 1
    assert "ERRORED" in result.stdout
    assert "worker was killed by signal SIGKILL without reporting" in result.stdout
    assert "faulty model: failing now" in result.stdout


def test_hung_worker_is_killed_after_heartbeat_timeout(
    toy_data, write_experiment, faulty_env
) -> None:
    file = write_experiment(experiment(toy_data, model="faulty_models:hangs", max_restarts=0))
    result = run_cli(["run", str(file)], faulty_env, timeout=120)
    assert result.returncode == 1
    assert "worker sent no heartbeat for" in result.stdout
    assert "it was killed as hung" in result.stdout
    assert "faulty model: failing now" in result.stdout
