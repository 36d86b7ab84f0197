"""Three classes through `trainyard run`: the example's weaver data config trains, every
validation stores the multi-class metrics, and an ASHA search ranks trials by val_auc_macro."""

from __future__ import annotations

import optuna
import pytest

from tests.integration.helpers import cli_env, run_cli, stored_trials, weaver_example
from trainyard.metrics import ClassLabels, validation_metric_names
from trainyard.settings import Settings
from trainyard.store import TrialState, repository

pytestmark = pytest.mark.integration

CLASSES = ClassLabels(labels=("is_qcd", "is_top", "is_massive"), background=0)


def test_a_search_by_val_auc_macro_trains_three_classes(
    toy_data, write_experiment, tmp_path
) -> None:
    config = weaver_example(toy_data, "particlenet-multiclass.yaml")
    config["hyperparameters"] = {
        "lr": {"type": "categorical", "vals": [0.003, 0.01, 0.03]},
        "batch_size": 64,
    }
    config["searcher"] = {
        "name": "asha",
        "metric": "val_auc_macro",
        "mode": "max",
        "max_trials": 3,
        "asha": {"sampler": "grid", "reduction_factor": 2},
    }
    config["training"].update(
        max_length={"batches": 32}, validation_period={"batches": 16}, lr_schedule={}
    )
    config["checkpoint"] = {"period": {"batches": 32}, "keep": 1}
    home = tmp_path / "home"
    result = run_cli(["run", str(write_experiment(config))], cli_env(home))
    assert result.returncode == 0, result.stdout + result.stderr

    trials = stored_trials(home, _validations)
    assert len(trials) == 3
    names = validation_metric_names(CLASSES)
    for state, validations in trials:
        assert state in (TrialState.COMPLETED, TrialState.STOPPED)
        for values in validations:
            assert tuple(values) == names
    final = [validations[-1] for state, validations in trials if state == TrialState.COMPLETED]
    assert final, "ASHA keeps at least the best trial"
    print("val_auc_macro of the completed trials:", [v["val_auc_macro"] for v in final])
    assert max(v["val_auc_macro"] for v in final) > 0.7
    assert all(v["val_rej50_is_top"] > 1 for v in final)

    # The search saw val_auc_macro: each trial's intermediate values in the Optuna study.
    study = optuna.load_study(
        study_name="trainyard-experiment-1", storage=Settings(home=home).resolved_database_url()
    )
    for frozen, (_, validations) in zip(study.trials, trials, strict=True):
        reported = [values["val_auc_macro"] for values in validations]
        assert sorted(frozen.intermediate_values.values()) == sorted(reported)


def _validations(session, trial) -> tuple[TrialState, list[dict[str, float]]]:
    reports = repository.list_metrics(session, trial_id=trial.id, kind="validation")
    return trial.state, [dict(report.values) for report in reports]
