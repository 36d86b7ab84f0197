"""weaver's histogram reweighting: weight tables per class, and the weight of each event.

A training set rarely has the same (pT, eta) spectrum in every class, and a tagger then learns
the spectrum instead of the jet. weaver bins two variables per class and derives a weight per bin
that flattens the spectrum (``flat``) or matches it to the first class (``ref``), then scales the
classes to equal weighted yields. The arithmetic below repeats weaver-core's step for step, so
the tables and weights equal those weaver writes into its ``*.auto.yaml``.

Array legend (suffixes give the shape):
    N  events
    X  x bins (len(x_bins) - 1)
    Y  y bins (len(y_bins) - 1)
"""

import logging
from collections.abc import Mapping

import awkward as ak
import numpy as np

from trainyard.data.weaver.columns import as_numpy, per_event
from trainyard.data.weaver.expressions import evaluate
from trainyard.data.weaver.types import PrecomputedWeights, Reweighting
from trainyard.errors import DataError

logger = logging.getLogger(__name__)

_MAX_WEIGHT = 0.9
"""weaver scales the smallest class to 0.9 (not 1) to keep some randomness in the sampling."""


def make_reweight_hists(
    x_N: np.ndarray,
    y_N: np.ndarray,
    is_class_N: Mapping[str, np.ndarray],
    base_weight_N: np.ndarray | None,
    reweighting: Reweighting,
) -> dict[str, np.ndarray]:
    """Weight tables (X, Y) per class, in ``reweighting.classes`` order.

    ``is_class_N`` holds a boolean per event for each class; ``base_weight_N`` is the value of
    ``reweight_basewgt`` (None when unset).
    """
    x_bins, y_bins = np.asarray(reweighting.x_bins), np.asarray(reweighting.y_bins)
    if not reweighting.discard_under_overflow:
        x_N = np.clip(x_N, x_bins.min(), x_bins.max())
        y_N = np.clip(y_N, y_bins.min(), y_bins.max())
    raw_hists_XY: dict[str, np.ndarray] = {}
    num_binned = 0
    for name in reweighting.classes:
        is_in_N = is_class_N[name]
        counts_XY, _, _ = np.histogram2d(x_N[is_in_N], y_N[is_in_N], bins=(x_bins, y_bins))
        if counts_XY.sum() == 0:
            raise DataError(
                f"reweight class {name!r} has no events inside the reweight_vars bins "
                f"({reweighting.x_var}: {list(reweighting.x_bins)}, {reweighting.y_var}: "
                f"{list(reweighting.y_bins)}); widen the bins or check the class definition"
            )
        num_binned += counts_XY.sum()
        if base_weight_N is not None:
            counts_XY, _, _ = np.histogram2d(
                x_N[is_in_N], y_N[is_in_N], weights=base_weight_N[is_in_N], bins=(x_bins, y_bins)
            )
        raw_hists_XY[name] = counts_XY.astype(np.float32)
    if num_binned != len(x_N):
        logger.warning(
            "reweighting uses %d of %d events; the rest are in no reweight class or outside "
            "the reweight_vars bins",
            num_binned,
            len(x_N),
        )

    hists_XY: dict[str, np.ndarray] = {}
    class_yields: dict[str, float] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, class_weight in zip(reweighting.classes, reweighting.class_weights, strict=True):
            raw_XY = raw_hists_XY[name]
            if reweighting.method == "flat":
                threshold = np.median(raw_XY[raw_XY > 0]) * 0.01
                reference = np.percentile(raw_XY[raw_XY > threshold], reweighting.threshold)
                ratio_XY = np.nan_to_num(reference / raw_XY, posinf=0)
                weight_XY = np.clip(ratio_XY, 0, 1)
            else:
                reference_XY = raw_hists_XY[reweighting.classes[0]]
                ratio_XY = np.nan_to_num(reference_XY / raw_XY, posinf=0)
                upper = np.percentile(ratio_XY[ratio_XY > 0], 100 - reweighting.threshold)
                weight_XY = np.clip(ratio_XY / upper, 0, 1)
            hists_XY[name] = weight_XY
            # Dividing by the class weight here raises that class's weights below.
            class_yields[name] = np.sum(raw_XY * weight_XY) / class_weight
    smallest_yield = min(class_yields.values()) * _MAX_WEIGHT
    for name in reweighting.classes:
        hists_XY[name] *= float(smallest_yield) / class_yields[name]

    if base_weight_N is not None:
        weights_N = event_weights(x_N, y_N, is_class_N, base_weight_N, reweighting, hists_XY)
        reference = np.percentile(weights_N, 100 - reweighting.threshold)
        for name in reweighting.classes:
            hists_XY[name] /= reference
    return hists_XY


def event_weights(
    x_N: np.ndarray,
    y_N: np.ndarray,
    is_class_N: Mapping[str, np.ndarray],
    base_weight_N: np.ndarray | None,
    reweighting: Reweighting,
    hists_XY: Mapping[str, np.ndarray],
) -> np.ndarray:
    """float32 (N,): each event's bin weight for its class (0 outside every class or bin range).

    An event in several classes takes the weight of the last one, as in weaver.
    """
    x_bins, y_bins = reweighting.x_bins, reweighting.y_bins
    is_in_range_N = np.ones(len(x_N), dtype=bool)
    if reweighting.discard_under_overflow:
        is_in_range_N = (
            (x_N >= min(x_bins))
            & (x_N <= max(x_bins))
            & (y_N >= min(y_bins))
            & (y_N <= max(y_bins))
        )
    weights_N = np.zeros(len(x_N), dtype=np.float32)
    is_weighted_N = np.zeros(len(x_N), dtype=bool)
    for name in reweighting.classes:
        is_used_N = is_class_N[name] & is_in_range_N
        x_index = np.clip(np.digitize(x_N[is_used_N], x_bins) - 1, 0, len(x_bins) - 2)
        y_index = np.clip(np.digitize(y_N[is_used_N], y_bins) - 1, 0, len(y_bins) - 2)
        weights_N[is_used_N] = hists_XY[name][x_index, y_index]
        is_weighted_N |= is_used_N
    if not is_weighted_N.all():
        logger.warning(
            "%d of %d events get weight 0: in no reweight class or outside the reweight_vars bins",
            int((~is_weighted_N).sum()),
            len(x_N),
        )
    if base_weight_N is not None:
        weights_N *= base_weight_N
    return weights_N


def reweight_inputs(
    events: ak.Array, weights: Reweighting
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """The arguments of make_reweight_hists and event_weights, taken from the event table."""
    x_N = per_event(events[weights.x_var], weights.x_var, "weights.reweight_vars")
    y_N = per_event(events[weights.y_var], weights.y_var, "weights.reweight_vars")
    is_class_N = {
        name: per_event(events[name], name, "weights.reweight_classes") == 1
        for name in weights.classes
    }
    base_N = None
    if weights.base_weight:
        value = evaluate(weights.base_weight, events, where="weights.reweight_basewgt")
        base_N = as_numpy(value, "reweight_basewgt")
    return x_N, y_N, is_class_N, base_N


def weights_of(events: ak.Array, weights: PrecomputedWeights | Reweighting) -> np.ndarray:
    """float32 (N,) weights: the product of the weight branches, or the reweighting tables'."""
    if isinstance(weights, PrecomputedWeights):
        product = evaluate("*".join(weights.branches), events, where="weights.weight_branches")
        return as_numpy(product, "weight_branches").astype(np.float32)
    inputs = reweight_inputs(events, weights)
    return event_weights(*inputs, weights, weights.hist_arrays())
