"""ASHA's rungs read back from an Optuna study: where trials were judged and what was decided.

Optuna's successive-halving pruner keeps no log of its decisions; it leaves a trace on each
trial instead: judging a trial at rung k sets the system attribute `completed_rung_k` to the
trial's value there, and a trial it stops is told to the study as PRUNED. So a trial with
`completed_rung_k` reached rung k; a PRUNED one was stopped at the last rung it completed, and
every other one went on (promoted). Hyperband runs one such pruner per bracket, each with its
own first rung. The rung steps come from the pruner's settings (`min_resource`,
`reduction_factor`, `min_early_stopping_rate`), which Optuna keeps in private attributes: they
are read here only, so an Optuna upgrade that renames them breaks this module's tests and
nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.pruners import HyperbandPruner, SuccessiveHalvingPruner
from optuna.storages import RDBStorage
from optuna.trial import TrialState as OptunaTrialState
from sqlalchemy import text

from trainyard.search.base import Rung

_RUNG_KEY = "completed_rung_{}"


@dataclass(frozen=True)
class _TrialRecord:
    """What the rungs need of a trial, named as on Optuna's FrozenTrial."""

    _trial_id: int
    number: int
    state: OptunaTrialState
    system_attrs: dict[str, float]
    last_step: int | None


def asha_rungs(study: optuna.Study) -> list[Rung]:
    """Every rung at least one trial reached, by bracket and rung index."""
    pruner = study.pruner
    if not isinstance(pruner, SuccessiveHalvingPruner | HyperbandPruner):
        return []
    trials = _rung_records(study)
    if isinstance(pruner, SuccessiveHalvingPruner):
        return _bracket_rungs(0, pruner, trials, trials)
    if isinstance(pruner, HyperbandPruner):
        if not pruner._pruners:  # a restarted Master's, before its first judgement
            pruner = _initialized_copy(pruner, study)
        rungs: list[Rung] = []
        for bracket, bracket_pruner in enumerate(pruner._pruners):
            members = [t for t in trials if pruner._get_bracket_id(study, t) == bracket]
            rungs += _bracket_rungs(bracket, bracket_pruner, members, trials)
        return rungs
    return []


def _rung_records(study: optuna.Study) -> list[Any]:
    """The study's trials with their rung records only: two queries on Optuna's tables when
    its storage is a database (Optuna's get_trials would also load every trial's params and
    each of its intermediate values: seconds for a thousand trials), else its trials."""
    storage = getattr(study._storage, "_backend", study._storage)
    if not isinstance(storage, RDBStorage):
        return study.get_trials(deepcopy=False)
    study_id = study._study_id
    with storage.engine.connect() as connection:
        rows = connection.execute(_RUNG_ATTRIBUTES, {"study_id": study_id}).all()
        last_step = connection.execute(_LAST_COMPLETE_STEP, {"study_id": study_id}).scalar()
    records: dict[int, _TrialRecord] = {}
    for trial_id, number, state, key, value in rows:
        record = records.setdefault(
            trial_id,
            _TrialRecord(trial_id, number, OptunaTrialState[state], {}, None),
        )
        if key is not None and key.startswith("completed_rung_"):  # LIKE's _ is any one
            record.system_attrs[key] = json.loads(value)
    # Only the longest complete trial's last step matters (`_estimated_min_resource`).
    complete = [r for r in records.values() if r.state is OptunaTrialState.COMPLETE]
    if complete and last_step is not None:
        longest = complete[0]
        records[longest._trial_id] = _TrialRecord(
            longest._trial_id, longest.number, longest.state, longest.system_attrs, last_step
        )
    return sorted(records.values(), key=lambda r: r.number)


_RUNG_ATTRIBUTES = text(
    "SELECT t.trial_id, t.number, t.state, a.key, a.value_json FROM trials t "
    "LEFT JOIN trial_system_attributes a "
    "ON a.trial_id = t.trial_id AND a.key LIKE 'completed_rung_%' "
    "WHERE t.study_id = :study_id"
)
_LAST_COMPLETE_STEP = text(
    "SELECT max(v.step) FROM trial_intermediate_values v "
    "JOIN trials t ON t.trial_id = v.trial_id "
    "WHERE t.study_id = :study_id AND t.state = 'COMPLETE'"
)


def _bracket_rungs(
    bracket: int,
    pruner: SuccessiveHalvingPruner,
    members: list[Any],
    all_trials: list[Any],
) -> list[Rung]:
    min_resource = pruner._min_resource or _estimated_min_resource(all_trials)
    rungs = []
    index = 0
    while True:
        key = _RUNG_KEY.format(index)
        reached = [t for t in members if key in t.system_attrs]
        if not reached:
            return rungs
        last_rung = {t._trial_id: _last_rung(t) for t in reached}
        stopped = [
            t._trial_id
            for t in reached
            if t.state is OptunaTrialState.PRUNED and last_rung[t._trial_id] == index
        ]
        step = None
        if min_resource is not None:
            exponent = pruner._min_early_stopping_rate + index
            step = min_resource * pruner._reduction_factor**exponent
        rungs.append(
            Rung(
                bracket=bracket,
                index=index,
                step=step,
                reached=[t._trial_id for t in reached],
                promoted=[t._trial_id for t in reached if t._trial_id not in stopped],
                stopped=stopped,
            )
        )
        index += 1


def _initialized_copy(pruner: HyperbandPruner, study: optuna.Study) -> HyperbandPruner:
    """A pruner with the same settings, its brackets set up from the study as its first
    judgement would (the searcher's own is left alone: it may be judging at the same time)."""
    copy = HyperbandPruner(
        min_resource=pruner._min_resource,
        max_resource=pruner._max_resource,
        reduction_factor=pruner._reduction_factor,
        bootstrap_count=pruner._bootstrap_count,
    )
    copy._try_initialization(study)
    return copy


def _last_rung(trial: Any) -> int:
    rung = 0
    while _RUNG_KEY.format(rung + 1) in trial.system_attrs:
        rung += 1
    return rung


def _estimated_min_resource(trials: list[Any]) -> int | None:
    """Optuna's estimate for min_resource "auto": the longest completed trial's last step /
    100 (what its pruner computes on its first judgement, and keeps only in memory)."""
    steps = [
        t.last_step
        for t in trials
        if t.state is OptunaTrialState.COMPLETE and t.last_step is not None
    ]
    return max(max(steps) // 100, 1) if steps else None
