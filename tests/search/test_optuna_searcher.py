"""Optuna searchers over a real study in the store's database (SQLite and PostgreSQL): grids,
limits, early stopping, restarts."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from trainyard.config import parse_experiment
from trainyard.search import OptunaSearcher
from trainyard.store import open_store


@pytest.fixture
def storage_url(database_url: str) -> str:
    open_store(database_url).close()  # our tables first, as in a real Master
    return database_url


def _config(searcher: dict[str, Any], hyperparameters: dict[str, Any]) -> Any:
    return parse_experiment(
        {
            "name": "s",
            "model": "mlp",
            "data": {"train": "a", "val": "b"},
            "hyperparameters": hyperparameters,
            "searcher": searcher,
            "training": {"max_length": {"batches": 100}, "validation_period": {"batches": 10}},
        }
    )


GRID = {
    "hidden_dim": {"type": "categorical", "vals": [32, 64]},
    "num_layers": {"type": "int", "min": 1, "max": 2},
    "lr": {"type": "log", "min": 1e-3, "max": 1e-2, "count": 2},
    "batch_size": 64,
}


def test_grid_enumerates_exactly_its_grid(storage_url: str) -> None:
    searcher = OptunaSearcher(
        _config({"name": "grid"}, GRID), storage_url=storage_url, study_name="g"
    )
    proposals = searcher.next_trials(num_created=0, num_free=3)
    proposals += searcher.next_trials(num_created=3, num_free=10)
    assert searcher.next_trials(num_created=len(proposals), num_free=10) == []
    seen = {
        (
            p.hyperparameters["hidden_dim"],
            p.hyperparameters["num_layers"],
            round(p.hyperparameters["lr"], 6),
        )
        for p in proposals
    }
    expected = set(itertools.product([32, 64], [1, 2], [0.001, 0.01]))
    assert len(proposals) == 8 and seen == expected
    assert all(p.hyperparameters["batch_size"] == 64 for p in proposals)


def test_random_stops_at_max_trials(storage_url: str) -> None:
    config = _config(
        {"name": "random", "max_trials": 3}, {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}}
    )
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="r")
    assert len(searcher.next_trials(num_created=0, num_free=5)) == 3
    assert searcher.next_trials(num_created=3, num_free=5) == []


def test_asha_stops_bad_trials_early(storage_url: str) -> None:
    config = _config(
        {"name": "asha", "max_trials": 9, "asha": {"reduction_factor": 3}},
        {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}},
    )
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="a")
    proposals = searcher.next_trials(num_created=0, num_free=9)
    decisions = [
        searcher.on_validation(
            searcher_trial_id=proposal.searcher_trial_id,
            batches=10,
            metrics={"val_auc": 0.9 - rank * 0.01},
        )
        for rank, proposal in enumerate(proposals)
    ]
    actions = [d.action for d in decisions]
    assert actions[0] == "continue" and actions.count("stop") >= 5
    stopped = next(d for d in decisions if d.action == "stop")
    assert stopped.reason.startswith("early-stopped at batch 10: val_auc=")


def test_a_restarted_searcher_continues_the_same_study(storage_url: str) -> None:
    config = _config({"name": "grid"}, GRID)
    first = OptunaSearcher(config, storage_url=storage_url, study_name="restart")
    done = first.next_trials(num_created=0, num_free=3)
    first.on_trial_end(
        searcher_trial_id=done[0].searcher_trial_id, result="completed", best_value=0.9
    )
    first.on_trial_end(
        searcher_trial_id=done[1].searcher_trial_id, result="errored", best_value=None
    )

    again = OptunaSearcher(config, storage_url=storage_url, study_name="restart")
    again.recover({p.searcher_trial_id for p in done[:2]})  # done[2] was never stored
    rest = again.next_trials(num_created=2, num_free=10)
    combos = {tuple(sorted(p.hyperparameters.items())) for p in [*done[:2], *rest]}
    assert len(rest) == 6 and len(combos) == 8
    states = [t.state.name for t in again._study.get_trials()]
    assert states.count("COMPLETE") == 1 and states.count("FAIL") == 1
    assert done[2].searcher_trial_id in {p.searcher_trial_id for p in rest}


def test_trial_end_is_idempotent(storage_url: str) -> None:
    config = _config(
        {"name": "random", "max_trials": 1}, {"lr": {"type": "double", "min": 0.1, "max": 0.2}}
    )
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="i")
    (proposal,) = searcher.next_trials(num_created=0, num_free=1)
    for _ in range(2):
        searcher.on_trial_end(
            searcher_trial_id=proposal.searcher_trial_id, result="stopped", best_value=0.7
        )
    assert searcher._study.trials[0].state.name == "PRUNED"


def test_asha_over_a_grid_visits_every_point(storage_url: str) -> None:
    config = _config({"name": "asha", "asha": {"sampler": "grid"}}, GRID)
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="ag")
    assert searcher.max_trials == 8
    proposals = searcher.next_trials(num_created=0, num_free=20)
    assert len({tuple(sorted(p.hyperparameters.items())) for p in proposals}) == 8
