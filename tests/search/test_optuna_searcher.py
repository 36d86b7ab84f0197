"""Optuna searchers over a real study in the store's database (SQLite and PostgreSQL): grids,
limits, early stopping, restarts."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from trainyard.config import parse_experiment
from trainyard.search import OptunaSearcher
from trainyard.search.asha_rungs import _bracket_rungs
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


SPACES = {
    "lr": {"type": "log", "min": 1e-4, "max": 1e-2},
    "dropout": {"type": "double", "min": 0.0, "max": 0.5},
    "width": {"type": "int", "min": 8, "max": 256},
    "act": {"type": "categorical", "vals": ["relu", "gelu", "silu"]},
}
RESUMABLE = {
    "random": ({"name": "random", "max_trials": 12, "seed": 5}, SPACES),
    "tpe": ({"name": "tpe", "max_trials": 12, "seed": 5}, SPACES),
    "asha": ({"name": "asha", "max_trials": 12, "seed": 5}, SPACES),
    "asha-tpe": ({"name": "asha", "max_trials": 12, "asha": {"sampler": "tpe"}}, SPACES),
    # fewer trials than grid points, so which points are visited depends on the order
    "grid": ({"name": "grid", "max_trials": 5, "seed": 5}, GRID),
}


def _score(hyperparameters: dict[str, Any]) -> float:
    """A deterministic 'validation AUC', so both searches see the same history."""
    return 1.0 / (1.0 + abs(hyperparameters["lr"] - 3e-3) * 100)


def _search(config: Any, url: str, chunks: list[int], *, restart: bool) -> list[dict[str, Any]]:
    """Ask `chunks[i]` trials, then tell each; with `restart`, a new searcher per chunk, as a
    Master resumed after a crash builds one on the same study."""
    proposals: list[Any] = []
    searcher = None
    for chunk in chunks:
        if searcher is None or restart:
            searcher = OptunaSearcher(config, storage_url=url, study_name="resume")
            searcher.recover({p.searcher_trial_id for p in proposals})
        asked = searcher.next_trials(num_created=len(proposals), num_free=chunk)
        for proposal in asked:
            searcher.on_trial_end(
                searcher_trial_id=proposal.searcher_trial_id,
                result="completed",
                best_value=_score(proposal.hyperparameters),
            )
        proposals += asked
    return [p.hyperparameters for p in proposals]


@pytest.mark.parametrize("kind", sorted(RESUMABLE))
def test_a_resumed_search_proposes_what_an_uninterrupted_one_does(
    kind: str, tmp_path: Path
) -> None:
    searcher, hyperparameters = RESUMABLE[kind]
    config = _config(searcher, hyperparameters)
    chunks = [4, 6, 2] if kind != "grid" else [2, 3]  # tpe models after 10 trials
    urls = []
    for name in ("uninterrupted", "resumed"):
        urls.append(f"sqlite:///{tmp_path / f'{name}.db'}")
        open_store(urls[-1]).close()
    uninterrupted = _search(config, urls[0], chunks, restart=False)
    resumed = _search(config, urls[1], chunks, restart=True)
    distinct = {tuple(sorted(h.items())) for h in resumed}
    assert len(distinct) == len(resumed), "a configuration was proposed twice"
    assert resumed == uninterrupted


def test_each_hyperparameter_of_a_trial_is_its_own_draw(storage_url: str) -> None:
    same = {"type": "double", "min": 0.0, "max": 1.0}
    config = _config({"name": "random", "max_trials": 3}, {"a": same, "b": same})
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="draws")
    for proposal in searcher.next_trials(num_created=0, num_free=3):
        assert proposal.hyperparameters["a"] != proposal.hyperparameters["b"]


def test_the_seed_changes_the_proposals(tmp_path: Path) -> None:
    proposals = []
    for seed in (1, 2):
        url = f"sqlite:///{tmp_path / f'seed{seed}.db'}"
        open_store(url).close()
        config = _config({"name": "random", "max_trials": 3, "seed": seed}, SPACES)
        searcher = OptunaSearcher(config, storage_url=url, study_name="seed")
        asked = searcher.next_trials(num_created=0, num_free=3)
        proposals.append([p.hyperparameters for p in asked])
    assert proposals[0] != proposals[1]


def test_telling_every_grid_point_ends_the_search_cleanly(storage_url: str) -> None:
    searcher = OptunaSearcher(
        _config({"name": "grid"}, GRID), storage_url=storage_url, study_name="full-grid"
    )
    for proposal in searcher.next_trials(num_created=0, num_free=8):
        searcher.on_trial_end(
            searcher_trial_id=proposal.searcher_trial_id, result="completed", best_value=0.5
        )
    assert [t.state.name for t in searcher._study.trials] == ["COMPLETE"] * 8


def test_asha_rungs_show_who_was_stopped_where(storage_url: str) -> None:
    config = _config(
        {"name": "asha", "max_trials": 4, "asha": {"reduction_factor": 2}},
        {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}},
    )
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="rungs")
    ids = [p.searcher_trial_id for p in searcher.next_trials(num_created=0, num_free=4)]
    assert searcher.rungs() == []  # nobody judged yet
    outcome: dict[int | None, str] = {}
    for step in (10, 20):  # rungs at 10 and 20 (first validation, then x2)
        for rank, trial_id in enumerate(ids):
            if trial_id in outcome:
                continue
            metrics = {"val_auc": 0.9 - rank * 0.01 + step / 1000}
            decision = searcher.on_validation(
                searcher_trial_id=trial_id, batches=step, metrics=metrics
            )
            if decision.action == "stop":
                outcome[trial_id] = "stopped"
                searcher.on_trial_end(
                    searcher_trial_id=trial_id, result="stopped", best_value=None
                )
    rungs = searcher.rungs()
    assert [(r.bracket, r.index, r.step) for r in rungs] == [(0, 0, 10), (0, 1, 20)]
    assert sorted(rungs[0].reached) == sorted(ids)
    assert set(rungs[0].stopped) | set(rungs[1].stopped) == set(outcome)
    assert set(rungs[0].promoted) == set(rungs[1].reached)
    assert not set(rungs[1].promoted) & set(rungs[1].stopped)
    study = searcher._study  # the two-query read of the records equals Optuna's own trials
    trials = study.get_trials(deepcopy=False)
    assert _bracket_rungs(0, study.pruner, trials, trials) == rungs


def test_hyperband_rungs_are_listed_per_bracket(storage_url: str) -> None:
    config = _config(
        {
            "name": "asha",
            "max_trials": 8,
            "asha": {"pruner": "hyperband", "reduction_factor": 2, "min_batches": 10},
        },
        {"lr": {"type": "log", "min": 1e-4, "max": 1e-2}},
    )
    searcher = OptunaSearcher(config, storage_url=storage_url, study_name="hyperband")
    first, *others = [p.searcher_trial_id for p in searcher.next_trials(num_created=0, num_free=8)]
    for step in (10, 20, 40, 80):  # one complete trial sets hyperband's brackets up
        searcher.on_validation(searcher_trial_id=first, batches=step, metrics={"val_auc": 0.5})
    searcher.on_trial_end(searcher_trial_id=first, result="completed", best_value=0.5)
    for rank, trial_id in enumerate(others):
        for step in (10, 20, 40):
            decision = searcher.on_validation(
                searcher_trial_id=trial_id, batches=step, metrics={"val_auc": 0.9 - rank / 100}
            )
            if decision.action == "stop":
                searcher.on_trial_end(
                    searcher_trial_id=trial_id, result="stopped", best_value=None
                )
                break
    restarted = OptunaSearcher(config, storage_url=storage_url, study_name="hyperband")
    rungs = restarted.rungs()  # a restarted Master's pruner has judged nothing yet
    assert rungs and {r.bracket for r in rungs} <= {0, 1, 2, 3}
    assert any(r.stopped for r in rungs)
    for rung in rungs:
        assert rung.step == 10 * 2 ** (rung.bracket + rung.index)
        assert set(rung.promoted) | set(rung.stopped) == set(rung.reached)
        assert not set(rung.promoted) & set(rung.stopped)
    assert searcher.rungs() == rungs
