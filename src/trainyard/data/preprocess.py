"""Standardise, clip and pad input variables into weaver's arrays; compute auto standardisation.

Per variable, as weaver-core does: values are standardised as (x - center) * scale and clipped
to [clip_min, clip_max] when a center is set (no clip otherwise), each event's list is cut or
padded to the group length (``constant``: pad_value; ``wrap``: the list repeated, 0 for an empty
one), and last NaN becomes 0 and +-inf the largest float32, as weaver's np.nan_to_num does.
Arithmetic happens in the variable's own float type (integers and booleans in float64) and the
result is float32, so the numbers equal weaver's bit for bit.

Auto standardisation uses weaver's robust estimate: center = median, scale = 1 / max(p84 - p50,
p50 - p16), computed on the raw values of a sample; variables named ``*_mask`` get no center.

Array legend (suffixes give the shape):
    N  events
    M  values of all events, flattened (one per event for a scalar variable)
    L  slots per event (the group length)
    C  variables of a group
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import awkward as ak
import numpy as np

from trainyard.data.weaver_config import InputGroup, InputVariable, WeaverDataConfig
from trainyard.errors import DataError

logger = logging.getLogger(__name__)

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


def standardize(values_M: np.ndarray, variable: InputVariable) -> np.ndarray:
    """(x - center) * scale clipped to [clip_min, clip_max]; unchanged without a center."""
    if variable.center is None:
        return values_M
    if variable.center == "auto":
        raise ValueError(f"{variable.name} has no computed center yet")
    if not np.issubdtype(values_M.dtype, np.floating):
        values_M = values_M.astype(np.float64)
    # Python floats keep float32 arithmetic in float32, as in weaver.
    shifted_M = (values_M - variable.center) * variable.scale
    return np.clip(shifted_M, variable.clip_min, variable.clip_max)


def variable_array(column: ak.Array, variable: InputVariable, group: InputGroup) -> np.ndarray:
    """One variable of ``group``: float32 (N, L), or (N,) when the group has no length."""
    if group.length is None:
        if column.ndim != 1:
            raise DataError(
                f"`inputs.{group.name}` has length null, so each of its variables needs one "
                f"value per event, but {variable.name!r} has type {column.type}; set a length"
            )
        values_N = standardize(to_numpy(column, variable.name), variable)
        return np.nan_to_num(values_N.astype(np.float32), copy=False)
    counts_N, values_M = counts_and_values(column, variable.name)
    padded_NL = pad_lists(
        counts_N,
        standardize(values_M, variable),
        group.length,
        wrap=group.pad_mode == "wrap",
        pad_value=variable.pad_value,
    )
    return np.nan_to_num(padded_NL, copy=False)


def group_array(group: InputGroup, arrays_C: Sequence[np.ndarray]) -> np.ndarray:
    """Stack a group's variables: (N, C, L); without a length (N, C), or (N,) for one variable."""
    if group.length is None and len(arrays_C) == 1:
        return arrays_C[0]
    return np.stack(arrays_C, axis=1)


def robust_center_scale(values_M: np.ndarray) -> tuple[float, float]:
    """weaver's estimate: the median, and 1 / the wider half of the 16-84 percentile band.

    Percentiles shrug off the long tails of particle-level variables; a band of zero width
    gives scale 1.
    """
    low, center, high = np.percentile(values_M, [16, 50, 84])
    spread = max(high - center, center - low)
    scale = 1 if spread == 0 else 1.0 / spread
    return float(center), float(scale)


def compute_standardization(
    events: ak.Array, variables: Sequence[InputVariable]
) -> dict[str, tuple[float | None, float]]:
    """(center, scale) of each variable from the raw values in ``events`` (a sample)."""
    params: dict[str, tuple[float | None, float]] = {}
    for variable in variables:
        if variable.name.endswith("_mask"):
            params[variable.name] = (None, variable.scale)
            continue
        values_M = ak.to_numpy(ak.flatten(events[variable.name], axis=None))
        if values_M.size == 0:
            raise DataError(
                f"auto standardisation of {variable.name!r} found no values in the sample; "
                "raise preprocess.data_fraction or check the selection"
            )
        if np.isnan(values_M).any():
            logger.warning("auto standardisation: %s has NaN values, counted as 0", variable.name)
            values_M = np.nan_to_num(values_M)
        params[variable.name] = robust_center_scale(values_M)
        logger.info(
            "auto standardisation: %s center=%r scale=%r (from %d values)",
            variable.name,
            *params[variable.name],
            values_M.size,
        )
    return params


def apply_standardization(
    config: WeaverDataConfig, params: Mapping[str, tuple[float | None, float]]
) -> WeaverDataConfig:
    """``config`` with the computed (center, scale) in place of each variable's "auto"."""

    def updated(variable: InputVariable) -> InputVariable:
        if variable.name not in params:
            return variable
        center, scale = params[variable.name]
        return replace(variable, center=center, scale=scale)

    inputs = tuple(
        replace(group, variables=tuple(updated(v) for v in group.variables))
        for group in config.inputs
    )
    return replace(config, inputs=inputs)
