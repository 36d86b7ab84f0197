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

from trainyard.data.weaver.columns import counts_and_values, pad_lists, to_numpy
from trainyard.data.weaver.types import InputGroup, InputVariable, WeaverDataConfig
from trainyard.errors import DataError

logger = logging.getLogger(__name__)


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
