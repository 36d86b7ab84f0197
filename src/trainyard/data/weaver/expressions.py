"""Weaver's expression language: Python expressions over the columns of an awkward event table.

weaver-core data configs compute new variables, selections, labels and weights with expressions
such as ``np.log(part_pt/jet_pt)``. As in weaver, a name in an expression is a column of the event
table unless it is ``np``/``numpy``, ``ak``/``awkward``, ``math``, ``len``, or starts with an
underscore: those are weaver's helper functions, re-implemented below with the same behaviour so
configs written for weaver run here unchanged. Expressions are Python code: configs are trusted.

Array legend (suffixes give the shape):
    N  events
    M  elements of a jagged column, all events flattened
    L  padded length
    K  neighbours per point
"""

import ast
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Any

import awkward as ak
import numpy as np

from trainyard.data.weaver.columns import counts_and_values, pad_lists
from trainyard.errors import ConfigError

CONFIG_SOURCE = "weaver data config"
"""How ConfigErrors raised while evaluating expressions name their source."""

_MODULE_NAMES = frozenset({"np", "numpy", "ak", "awkward", "math", "len"})


def _hash(*columns: Sequence[Any]) -> np.ndarray:
    """One Python hash per event of the zipped values, to build a single key from several IDs."""
    return np.array([hash(values) for values in zip(*columns, strict=False)])


def _concat(arrays: Sequence[Any], axis: int = 0) -> Any:
    """Concatenate numpy or awkward arrays; an empty list gives an empty numpy array."""
    if not arrays:
        return np.array([])
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays, axis=axis)
    return ak.concatenate(arrays, axis=axis)


def _stack(arrays: Sequence[Any], axis: int = 1) -> Any:
    """Stack numpy or (jagged) awkward arrays along a new ``axis``."""
    if not arrays:
        return np.array([])
    if isinstance(arrays[0], np.ndarray):
        return np.stack(arrays, axis=axis)
    new_axis = tuple(np.newaxis if i == axis else slice(None) for i in range(arrays[0].ndim + 1))
    return ak.concatenate([array[new_axis] for array in arrays], axis=axis)


def _pad(array: Any, maxlen: int, value: float = 0, dtype: str = "float32") -> np.ndarray:
    """Truncate or pad each event's list to ``maxlen`` with ``value``; shape (N, L)."""
    if isinstance(array, np.ndarray) and array.ndim >= 2 and array.shape[1] == maxlen:
        return array
    if isinstance(array, np.ndarray):
        array = ak.from_numpy(array)
    elif not isinstance(array, ak.Array):
        array = ak.Array([np.asarray(row) for row in array])
    counts_N, values_M = counts_and_values(array, "_pad argument")
    padded_NL = pad_lists(counts_N, values_M, maxlen, wrap=False, pad_value=value)
    return padded_NL.astype(dtype, copy=False)


def _repeat_pad(array: ak.Array, maxlen: int, dtype: str = "float32") -> np.ndarray:
    """Fill ``maxlen`` slots by repeating each event's list cyclically; empty events give 0."""
    counts_N, values_M = counts_and_values(ak.Array(array), "_repeat_pad argument")
    return pad_lists(counts_N, values_M, maxlen, wrap=True, pad_value=0).astype(dtype, copy=False)


def _clip(array: Any, a_min: float, a_max: float) -> Any:
    """np.clip that keeps the jagged structure of an awkward array."""
    if isinstance(array, np.ndarray) or array.ndim == 1:
        return np.clip(array, a_min, a_max)
    clipped_M = np.clip(ak.to_numpy(ak.flatten(array)), a_min, a_max)
    return ak.unflatten(clipped_M, ak.num(array))


def _knn(support: np.ndarray, query: np.ndarray, k: int, n_jobs: int = 1) -> np.ndarray:
    """Indices of the ``k`` points of ``support`` nearest to each point of ``query``."""
    from scipy.spatial import cKDTree

    _, index = cKDTree(support).query(query, k, workers=n_jobs)
    return index


def _batch_knn(
    supports: Sequence[np.ndarray],
    queries: Sequence[np.ndarray],
    k: int,
    maxlen_s: int,
    maxlen_q: int | None = None,
    n_jobs: int = 1,
) -> np.ndarray:
    """Per-event k nearest neighbours, int32 (N, L, K); missing queries point at the last slot."""
    if len(supports) != len(queries):
        raise ValueError(f"_batch_knn got {len(supports)} supports but {len(queries)} queries")
    maxlen_q = maxlen_s if maxlen_q is None else maxlen_q
    index_NLK = np.full((len(supports), maxlen_q, k), maxlen_s - 1, dtype="int32")
    for event, (support, query) in enumerate(zip(supports, queries, strict=True)):
        query = query[:maxlen_q]
        found = _knn(support[:maxlen_s], query, k, n_jobs=n_jobs)
        index_NLK[event, : len(query), :] = np.reshape(found, (-1, k))
    return index_NLK


def _batch_permute_indices(array: ak.Array) -> ak.Array:
    """A random permutation of each event's list (uses numpy's global random state, as weaver)."""
    random_M = np.random.rand(int(ak.count(array)))
    return ak.argsort(ak.unflatten(random_M, ak.num(array)))


def _batch_argsort(array: ak.Array) -> ak.Array:
    """Per-event argsort, ascending."""
    return ak.argsort(array)


def _batch_gather(array: ak.Array, indices: ak.Array) -> ak.Array:
    """Per-event fancy indexing."""
    return array[indices]


def _batch_permute_and_drop_indices(
    array: ak.Array,
    random_permute: bool = True,
    drop_rate_min: float = 0,
    drop_rate_max: float = 0,
    min_elements: int = 1,
) -> ak.Array:
    """Permute (or sort) each event's list and randomly drop a share of it, keeping a minimum."""
    indices = _batch_permute_indices(array) if random_permute else _batch_argsort(array)
    if drop_rate_min:
        if not 0 < drop_rate_min <= drop_rate_max < 1:
            raise ValueError(
                f"need 0 < drop_rate_min <= drop_rate_max < 1, got {drop_rate_min}, "
                f"{drop_rate_max}"
            )
        counts_N = ak.num(array)
        drop_rate_N = np.random.uniform(drop_rate_min, drop_rate_max, size=len(counts_N))
        kept_N = np.maximum(min_elements, np.round(counts_N * (1 - drop_rate_N)))
        indices = indices[indices < ak.values_astype(kept_N, "int64")]
    return indices


def _four_vectors(components: dict[str, Any]) -> ak.Array:
    """Zip components into scikit-hep ``vector`` Lorentz vectors, as weaver's _p4 helpers do."""
    try:
        import vector
    except ImportError as error:
        raise ConfigError(
            [
                "an expression uses a _p4_from_* helper, which needs the `vector` package; "
                "install it with `pip install vector`"
            ],
            source=CONFIG_SOURCE,
        ) from error
    vector.register_awkward()
    return vector.zip(components)


def _p4_from_pxpypze(px: Any, py: Any, pz: Any, energy: Any) -> ak.Array:
    """Four-vectors from Cartesian momentum and energy."""
    return _four_vectors({"px": px, "py": py, "pz": pz, "energy": energy})


def _p4_from_ptetaphie(pt: Any, eta: Any, phi: Any, energy: Any) -> ak.Array:
    """Four-vectors from pT, eta, phi and energy."""
    return _four_vectors({"pt": pt, "eta": eta, "phi": phi, "energy": energy})


def _p4_from_ptetaphim(pt: Any, eta: Any, phi: Any, mass: Any) -> ak.Array:
    """Four-vectors from pT, eta, phi and mass."""
    return _four_vectors({"pt": pt, "eta": eta, "phi": phi, "mass": mass})


HELPERS: Mapping[str, Callable[..., Any]] = {
    function.__name__: function
    for function in (
        _hash,
        _concat,
        _stack,
        _pad,
        _repeat_pad,
        _clip,
        _knn,
        _batch_knn,
        _batch_permute_indices,
        _batch_argsort,
        _batch_gather,
        _batch_permute_and_drop_indices,
        _p4_from_pxpypze,
        _p4_from_ptetaphie,
        _p4_from_ptetaphim,
    )
}
"""The helpers weaver puts in its expression name space, by the names configs call them."""

_NAMESPACE: dict[str, ModuleType | Callable[..., Any]] = {
    "np": np,
    "numpy": np,
    "ak": ak,
    "awkward": ak,
    "math": math,
    "len": len,
    **HELPERS,
}


@functools.lru_cache(maxsize=4096)
def variable_names(expression: str) -> tuple[str, ...]:
    """The table columns ``expression`` reads, sorted: its free names minus modules and helpers.

    Names bound inside the expression (lambda arguments, comprehension variables) are not columns.
    """
    tree = ast.parse(expression, mode="eval")
    bound = {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not node.id.startswith("_"):
            (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
    return tuple(sorted(used - bound - _MODULE_NAMES))


@functools.lru_cache(maxsize=4096)
def _compiled(expression: str) -> CodeType:
    return compile(expression, "<weaver expression>", "eval")


def evaluate(expression: str, events: ak.Array, *, where: str) -> Any:
    """Evaluate ``expression`` with each column it names taken from ``events``.

    ``where`` says which config key the expression comes from, for the error message.
    """
    namespace: dict[str, Any] = dict(_NAMESPACE)
    namespace.update({name: events[name] for name in variable_names(expression)})
    try:
        return eval(_compiled(expression), namespace)
    except Exception as error:
        raise ConfigError(
            [
                f"`{where}`: evaluating `{expression}` failed with {type(error).__name__}: "
                f"{error}; fix the expression (names are table columns, np, ak, math, len or "
                f"weaver helpers: {', '.join(sorted(HELPERS))})"
            ],
            source=CONFIG_SOURCE,
        ) from error


@dataclass(frozen=True)
class Dependencies:
    """What must be read from files and computed to provide a set of requested names."""

    branches: dict[str, str]
    """Names to read from the data, each with the config key that first needed it."""
    new_variables: tuple[str, ...]
    """new_variables to compute, in an order where each comes after those it uses."""


def resolve_dependencies(
    requested: Mapping[str, str], new_variables: Mapping[str, str]
) -> Dependencies:
    """Follow ``requested`` names (name -> config key needing it) through ``new_variables``.

    A new variable shadows a branch of the same name, as in weaver, which never reads such a
    branch. A cycle among new variables is a ConfigError that names it.
    """
    branches: dict[str, str] = {}
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" or "done"

    def visit(name: str, needed_by: str, chain: tuple[str, ...]) -> None:
        if name not in new_variables:
            branches.setdefault(name, needed_by)
            return
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise ConfigError(
                [f"`new_variables` refer to each other in a cycle: {cycle}; break the cycle"],
                source=CONFIG_SOURCE,
            )
        state[name] = "visiting"
        for used in variable_names(new_variables[name]):
            visit(used, f"{needed_by} via new_variables.{name}", (*chain, name))
        state[name] = "done"
        order.append(name)

    for name, needed_by in requested.items():
        visit(name, needed_by, ())
    return Dependencies(branches=branches, new_variables=tuple(order))
