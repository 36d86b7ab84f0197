"""A weaver data config through `trainyard run`: staged once, reused by the next trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import cli_env, last_validation, run_cli, weaver_example
from trainyard.settings import Settings
from trainyard.store import TrialState, open_store, repository

pytestmark = pytest.mark.integration


def test_weaver_config_trial_trains_and_the_next_trial_reuses_the_staged_data(
    toy_data, write_experiment, tmp_path
) -> None:
    config = weaver_example(toy_data, "particlenet-weaver-config.yaml")
    # Two small trials, one after the other: the first stages, the second reuses.
    config["hyperparameters"] = {
        "lr": {"type": "categorical", "vals": [0.005, 0.01]},
        "batch_size": 64,
    }
    config["searcher"] = {"name": "grid", "metric": "val_auc", "mode": "max"}
    config["training"].update(
        max_length={"batches": 32},
        validation_period={"batches": 32},
        lr_schedule={"name": "constant"},
    )
    config["checkpoint"] = {"period": {"batches": 32}, "keep": 1}
    home = tmp_path / "home"
    result = run_cli(["run", str(write_experiment(config))], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr

    trials = _trials(home)
    assert [trial.state for trial in trials] == [TrialState.COMPLETED] * 2
    first_log, second_log = (Path(trial.log_path).read_text() for trial in trials)
    assert "staging training data from 1 file(s)" in first_log
    assert "staging validation data from 1 file(s)" in first_log
    assert "reusing staged training data" in second_log
    assert "reusing staged validation data" in second_log
    assert "staging" not in second_log
    staged = [p for p in (home / "cache" / "staged").iterdir() if not p.name.startswith(".")]
    assert len(staged) == 2, staged  # training and validation, once
    aucs = [last_validation(home, trial.id)["val_auc"] for trial in trials]
    print("val_auc per trial:", aucs)
    assert max(aucs) > 0.7, aucs


def _trials(home: Path) -> list:
    store = open_store(Settings(home=home).resolved_database_url())
    try:
        with store.session() as session:
            experiment_id = repository.list_experiments(session)[0].id
            trials = repository.list_trials(session, experiment_id=experiment_id)
            for trial in trials:
                session.expunge(trial)
            return sorted(trials, key=lambda trial: trial.number)
    finally:
        store.close()
