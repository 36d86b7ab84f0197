"""Value checks for model options, so a bad hyperparameter fails at build time with its name.

A search may hand us numpy integers or lists from YAML; these helpers accept those and turn
anything else into a ModelError that says which option of which model was wrong.
"""

from collections.abc import Sequence
from numbers import Integral, Real

from trainyard.errors import ModelError


def positive_int(model: str, option: str, value: object) -> int:
    """Return value as int; bool is refused because True would silently mean 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ModelError(f"{model}: option '{option}' must be a positive integer, got {value!r}")
    return int(value)


def dropout_rate(model: str, option: str, value: object) -> float:
    """Return value as float in [0, 1), the range nn.Dropout can train with."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) < 1.0:
        raise ModelError(f"{model}: option '{option}' must be a number in [0, 1), got {value!r}")
    return float(value)


def channel_lists(model: str, option: str, value: object) -> tuple[tuple[int, ...], ...]:
    """Return a non-empty list of non-empty lists of positive ints as nested tuples."""
    problem = (
        f"{model}: option '{option}' must be a non-empty list of non-empty lists of positive "
        f"integers, e.g. [[64, 64, 64], [128, 128, 128]], got {value!r}"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ModelError(problem)
    blocks = []
    for block in value:
        if isinstance(block, str | bytes) or not isinstance(block, Sequence) or not block:
            raise ModelError(problem)
        if any(isinstance(c, bool) or not isinstance(c, Integral) or c < 1 for c in block):
            raise ModelError(problem)
        blocks.append(tuple(int(c) for c in block))
    return tuple(blocks)


def int_list(
    model: str, option: str, value: object, *, allow_empty: bool = False
) -> tuple[int, ...]:
    """Return a list of positive ints (non-empty unless ``allow_empty``) as a tuple."""
    example = "[64, 64, 64]"
    problem = (
        f"{model}: option '{option}' must be a {'' if allow_empty else 'non-empty '}list of "
        f"positive integers, e.g. {example}, got {value!r}"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ModelError(problem)
    if not value and not allow_empty:
        raise ModelError(problem)
    if any(isinstance(c, bool) or not isinstance(c, Integral) or c < 1 for c in value):
        raise ModelError(problem)
    return tuple(int(c) for c in value)
