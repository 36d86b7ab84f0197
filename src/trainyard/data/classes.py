"""Which classes the multi-class metrics name, and which one the per-class rejections take as
the background (``data.background_class``).

Only a data config whose ``labels.value`` lists more than two classes gets multi-class
metrics; with two, the signal class against the other is the whole picture, and a background
class would change nothing, so setting one is an error rather than a setting that silently
does nothing. Without ``data.background_class`` the background is the one class whose name
contains "QCD" (any case), as JetClass's ``label_QCD``; with none or several such classes no
rejections are reported, and preflight says so when the searcher asks for one.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainyard.errors import ConfigError
from trainyard.metrics.multiclass import ClassLabels, class_metric_names
from trainyard.suggest import did_you_mean

BACKGROUND_NAME_HINT = "qcd"
"""A class whose name contains this (any case) is the default background."""


def metric_classes(
    labels: Sequence[str], background: int | str | None, *, where: str
) -> ClassLabels | None:
    """The classes of ``labels`` (``labels.value``, in order) for the multi-class metrics, or
    None for two classes. ``where`` names the labels' origin in messages (the data config's
    path, or "the built-in inputs"). Raises ConfigError with one line per problem."""
    if len(labels) <= 2:
        if background is None:
            return None
        raise ConfigError(
            [
                f"`data.background_class`: {background!r} is set, but {where} has "
                f"{len(labels)} classes; a background class is for the per-class rejections "
                "of more than two classes (with two, val_auc, val_rej30 and val_rej50 take "
                "data.signal_class against the other class), so remove it"
            ],
            source="data",
        )
    problems: list[str] = []
    try:
        class_metric_names(labels)
    except ValueError as error:
        problems.append(f"`data.config` ({where}): {error}")
    index = _background_index(labels, background, where, problems)
    if problems:
        raise ConfigError(problems, source="data")
    return ClassLabels(labels=tuple(labels), background=index)


def _background_index(
    labels: Sequence[str], background: int | str | None, where: str, problems: list[str]
) -> int | None:
    """``data.background_class`` as an index (a name or an index), or the default."""
    if background is None:
        return default_background(labels)
    if isinstance(background, str):
        if background in labels:
            return list(labels).index(background)
        problems.append(
            f"`data.background_class`: {background!r} is not in `labels.value` of {where}; "
            f"{did_you_mean(background, labels)}the classes are {', '.join(labels)} "
            "(give one of these names or its index)"
        )
        return None
    if 0 <= background < len(labels):
        return background
    problems.append(
        f"`data.background_class`: {background} is not a class of {where}, whose "
        f"`labels.value` {list(labels)} has classes 0 to {len(labels) - 1}"
    )
    return None


def background_candidates(labels: Sequence[str]) -> list[str]:
    """The classes whose names mark them as QCD, the default background."""
    return [label for label in labels if BACKGROUND_NAME_HINT in label.lower()]


def default_background(labels: Sequence[str]) -> int | None:
    """The index of the only class named like QCD; None when there is no such class or more
    than one."""
    candidates = background_candidates(labels)
    return list(labels).index(candidates[0]) if len(candidates) == 1 else None
