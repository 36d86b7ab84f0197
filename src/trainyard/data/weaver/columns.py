"""Awkward columns as numpy: flat values, one value per event, and lists padded to a length.

These are the array mechanics both weaver's preprocessing and its expression helpers (``_pad``,
``_repeat_pad``) rest on; they know nothing of configs. Missing values (None) become NaN, a
missing list counts as empty, and padding either repeats each list (``wrap``) or fills a value.

Array legend (suffixes give the shape):
    N  events
    M  values of all events, flattened (one per event for a scalar variable)
    L  slots per event (the padded length)
"""

import awkward as ak
import numpy as np

from trainyard.errors import DataError

_CHUNK_EVENTS = 65_536
"""Events padded at a time, so the (events, L) index arrays stay small for large datasets."""


def to_numpy(column: ak.Array, name: str) -> np.ndarray:
    """A flat awkward column as numpy; missing values (None) become NaN."""
    try:
        values = ak.to_numpy(column, allow_missing=True)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"variable {name!r} has type {column.type}, which is not a number per element; "
            "give inputs and observers numeric (or boolean) variables"
        ) from error
    if not np.ma.isMaskedArray(values):
        return values
    if not np.ma.getmaskarray(values).any():
        return np.ma.getdata(values)
    return np.ma.filled(values.astype(np.float64), np.nan)


def as_numpy(value: object, name: str) -> np.ndarray:
    """An expression's result as numpy, whether it came out awkward or numpy."""
    if isinstance(value, ak.Array):
        return to_numpy(value, name)
    return np.asarray(value)


def per_event(column: ak.Array, name: str, key: str) -> np.ndarray:
    """A column that must hold one value per event (observers, weights), as numpy."""
    if column.ndim != 1:
        raise DataError(
            f"`{key}` entry {name!r} has type {column.type}, not one value per event; "
            f"observe a per-event summary instead, e.g. define ak.num({name}) in new_variables"
        )
    return to_numpy(column, name)


def counts_and_values(column: ak.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-event list lengths (N,) and all values flattened (M,) of a scalar or jagged column.

    A scalar column counts as one-element lists, which is how weaver pads scalars; a missing
    list counts as empty.
    """
    if column.ndim == 1:
        return np.ones(len(column), dtype=np.int64), to_numpy(column, name)
    if column.ndim == 2:
        counts_N = ak.to_numpy(ak.fill_none(ak.num(column, axis=1), 0)).astype(np.int64)
        return counts_N, to_numpy(ak.flatten(column, axis=1), name)
    raise DataError(
        f"variable {name!r} has type {column.type}: lists of lists cannot be padded into one "
        "(N, C, L) array; flatten it in new_variables (e.g. ak.flatten(x, axis=2))"
    )


def pad_lists(
    counts_N: np.ndarray,
    values_M: np.ndarray,
    length: int,
    *,
    wrap: bool,
    pad_value: float,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Cut or pad each event's list to ``length``: (N, L) of ``dtype``.

    ``wrap`` fills the slots by repeating the list (an empty list gives 0); otherwise slots past
    the list hold ``pad_value``.
    """
    counts_N = np.asarray(counts_N, dtype=np.int64)
    padded_NL = np.empty((len(counts_N), length), dtype=dtype)
    starts_N = np.cumsum(counts_N) - counts_N
    slots_L = np.arange(length)
    fill = 0 if wrap else pad_value
    for first in range(0, len(counts_N), _CHUNK_EVENTS):
        chunk = slice(first, first + _CHUNK_EVENTS)
        counts_n1 = counts_N[chunk, None]
        if wrap:
            offsets_nL = slots_L % np.maximum(counts_n1, 1)
            is_filled_nL = np.broadcast_to(counts_n1 > 0, offsets_nL.shape)
        else:
            offsets_nL = np.broadcast_to(slots_L, (len(counts_n1), length))
            is_filled_nL = slots_L < counts_n1
        if values_M.size == 0:
            padded_NL[chunk] = fill
            continue
        taken_nL = values_M.take(starts_N[chunk, None] + offsets_nL, mode="clip")
        padded_NL[chunk] = np.where(is_filled_nL, taken_nL, fill)
    return padded_NL
