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

import optuna
from optuna.pruners import HyperbandPruner, SuccessiveHalvingPruner
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaTrialState

from trainyard.search.base import Rung

_RUNG_KEY = "completed_rung_{}"


def asha_rungs(study: optuna.Study) -> list[Rung]:
    """Every rung at least one trial reached, by bracket and rung index."""
    pruner = study.pruner
    trials = study.get_trials(deepcopy=False)
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


def _bracket_rungs(
    bracket: int,
    pruner: SuccessiveHalvingPruner,
    members: list[FrozenTrial],
    all_trials: list[FrozenTrial],
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


def _last_rung(trial: FrozenTrial) -> int:
    rung = 0
    while _RUNG_KEY.format(rung + 1) in trial.system_attrs:
        rung += 1
    return rung


def _estimated_min_resource(trials: list[FrozenTrial]) -> int | None:
    """Optuna's estimate for min_resource "auto": the longest completed trial's last step /
    100 (what its pruner computes on its first judgement, and keeps only in memory)."""
    steps = [
        t.last_step
        for t in trials
        if t.state is OptunaTrialState.COMPLETE and t.last_step is not None
    ]
    return max(max(steps) // 100, 1) if steps else None
