"""Did-you-mean hints for messages about a misspelt name, one rule for every message.

A key in an experiment file, a pool, a model, a branch of a data file: whenever a message says
a name is unknown, it offers the closest known name, found the same way everywhere.
"""

import difflib
from collections.abc import Iterable

SIMILARITY_CUTOFF = 0.6
"""difflib's similarity ratio a known name needs to be suggested (difflib's own default)."""


def closest_name(name: object, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``name``, or None when none is similar enough."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=SIMILARITY_CUTOFF)
    return matches[0] if matches else None


def did_you_mean(
    name: object,
    choices: Iterable[str],
    *,
    before: str = "",
    after: str = " ",
    sentence: bool = False,
) -> str:
    """``before + "did you mean 'x'?" + after`` for the closest choice, or "" when none is close.

    The default fits inside a message, e.g. ``f"unknown key 'lr'; {hint}allowed keys: ..."``;
    ``sentence`` starts the question with a capital letter, for a hint that ends a sentence.
    """
    match = closest_name(name, choices)
    if match is None:
        return ""
    question = f"{'Did' if sentence else 'did'} you mean {match!r}?"
    return f"{before}{question}{after}"
