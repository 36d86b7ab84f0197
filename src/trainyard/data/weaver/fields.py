"""Value checks of the weaver config parser, and the parsers of its weights and file sections.

Each helper appends one line per problem (key path first, then what is wrong and what to do) and
returns its best guess, so a single run reports every mistake.
"""

import ast
import itertools
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from trainyard.data.weaver.types import Bucketing, FileMagic, PrecomputedWeights, Reweighting
from trainyard.suggest import did_you_mean

WEIGHT_KEYS = (
    "use_precomputed_weights",
    "weight_branches",
    "reweight_method",
    "reweight_vars",
    "reweight_classes",
    "class_weights",
    "reweight_threshold",
    "reweight_discard_under_overflow",
    "reweight_basewgt",
    "reweight_hists",
)


def reject_unknown(
    raw: Mapping[Any, Any], allowed: tuple[str, ...], where: str, problems: list[str]
) -> None:
    """One problem per key weaver would not read, with the closest allowed key."""
    for key in raw:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            problems.append(
                f"`{where}`: unknown key {key!r}; {hint}allowed keys here: {', '.join(allowed)}"
            )


def as_mapping(value: Any, where: str, problems: list[str]) -> Mapping[Any, Any]:
    """``value`` if it is a mapping; null counts as empty, anything else is a problem."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"`{where}` must be a mapping, got {type(value).__name__} {value!r}")
        return {}
    return value


def as_number(value: Any, where: str, problems: list[str], default: float = 0.0) -> float:
    """A float from an int or float; booleans are rejected although Python counts them."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"`{where}` must be a number, got {value!r}")
        return default
    return float(value)


def as_optional_string(value: Any, where: str, problems: list[str]) -> str | None:
    """A string or None."""
    if value is None or isinstance(value, str):
        return value
    problems.append(f"`{where}` must be a string, got {type(value).__name__} {value!r}")
    return None


def syntax_problem(expression: str) -> str | None:
    """Why ``expression`` is not a Python expression, or None if it is one.

    Here rather than in expressions.py, which imports awkward to evaluate expressions: every
    worker parses its data config, and only staging evaluates it.
    """
    try:
        ast.parse(expression, mode="eval")
    except SyntaxError as error:
        return f"`{expression}` is not a valid Python expression ({error.msg})"
    return None


def as_expression(value: Any, where: str, problems: list[str]) -> str:
    """An expression string; a bare number or boolean is taken as the expression it spells."""
    if isinstance(value, bool | int | float):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"`{where}` must be an expression string, got {value!r}")
        return "None"
    problem = syntax_problem(value)
    if problem:
        problems.append(f"`{where}`: {problem}")
    return value


def as_optional_expression(value: Any, where: str, problems: list[str]) -> str | None:
    """An expression, or None for an empty key."""
    return None if value is None else as_expression(value, where, problems)


def as_expression_map(value: Any, where: str, problems: list[str]) -> list[tuple[str, str]]:
    """(name, expression) pairs of a mapping, in the order written (later may use earlier)."""
    return [
        (str(name), as_expression(text, f"{where}.{name}", problems))
        for name, text in as_mapping(value, where, problems).items()
    ]


def as_names(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    """A list of non-empty names; null means none."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"`{where}` must be a list of names, got {value!r}")
        return ()
    return tuple(value)


def as_bins(value: Any, where: str, problems: list[str]) -> tuple[float, ...]:
    """Increasing bin edges, at least two."""
    if not isinstance(value, list) or len(value) < 2:
        problems.append(f"`{where}` must be a list of at least two bin edges, got {value!r}")
        return (0.0, 1.0)
    edges = tuple(as_number(v, where, problems) for v in value)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        problems.append(f"`{where}` bin edges must increase, got {value!r}")
    return edges


def parse_weights(value: Any, problems: list[str]) -> PrecomputedWeights | Reweighting | None:
    """The weights section: weight branches, or weaver's histogram reweighting."""
    if value is None:
        return None
    raw = as_mapping(value, "weights", problems)
    reject_unknown(raw, WEIGHT_KEYS, "weights", problems)
    precomputed = raw.get("use_precomputed_weights")
    if not isinstance(precomputed, bool):
        problems.append(
            f"`weights.use_precomputed_weights` must be true or false, got {precomputed!r}"
        )
        return None
    if precomputed:
        branches = as_names(raw.get("weight_branches"), "weights.weight_branches", problems)
        if not branches:
            problems.append("`weights.weight_branches` must list the weight branches to multiply")
        return PrecomputedWeights(branches)
    method = raw.get("reweight_method")
    if method not in ("flat", "ref"):
        problems.append(f"`weights.reweight_method` must be 'flat' or 'ref', got {method!r}")
    variables = as_mapping(raw.get("reweight_vars"), "weights.reweight_vars", problems)
    if len(variables) != 2:
        problems.append(
            "`weights.reweight_vars` must map exactly two variables (x, y) to bin edges, "
            f"got {list(variables)}"
        )
        variables = {"x": [0, 1], "y": [0, 1]}
    (x_var, x_raw), (y_var, y_raw) = variables.items()
    x_bins = as_bins(x_raw, f"weights.reweight_vars.{x_var}", problems)
    y_bins = as_bins(y_raw, f"weights.reweight_vars.{y_var}", problems)
    classes = as_names(raw.get("reweight_classes"), "weights.reweight_classes", problems)
    if not classes:
        problems.append("`weights.reweight_classes` must list the 0/1 class variables to weight")
    class_weights = raw.get("class_weights")
    if class_weights is None:
        class_weights = [1.0] * len(classes)
    elif not isinstance(class_weights, list) or len(class_weights) != len(classes):
        problems.append(
            f"`weights.class_weights` must give one number per reweight class ({len(classes)})"
        )
        class_weights = [1.0] * len(classes)
    reweighting = Reweighting(
        method=method if method in ("flat", "ref") else "flat",
        x_var=str(x_var),
        x_bins=x_bins,
        y_var=str(y_var),
        y_bins=y_bins,
        classes=classes,
        class_weights=tuple(
            as_number(w, "weights.class_weights", problems) for w in class_weights
        ),
        threshold=as_number(
            raw.get("reweight_threshold", 10), "weights.reweight_threshold", problems
        ),
        discard_under_overflow=bool(raw.get("reweight_discard_under_overflow", True)),
        base_weight=as_optional_expression(
            raw.get("reweight_basewgt"), "weights.reweight_basewgt", problems
        ),
    )
    hists = raw.get("reweight_hists")
    if hists is None:
        return reweighting
    return with_hists(reweighting, as_mapping(hists, "weights.reweight_hists", problems), problems)


def with_hists(
    reweighting: Reweighting, hists: Mapping[Any, Any], problems: list[str]
) -> Reweighting:
    """Attach ``reweight_hists`` after checking there is one (x bins, y bins) table per class."""
    if set(hists) != set(reweighting.classes):
        problems.append(
            f"`weights.reweight_hists` has classes {sorted(hists)} but reweight_classes are "
            f"{list(reweighting.classes)}; remake the histograms"
        )
        return reweighting
    shape = (len(reweighting.x_bins) - 1, len(reweighting.y_bins) - 1)
    tables = []
    for name in reweighting.classes:
        table = hists[name]
        where = f"weights.reweight_hists.{name}"
        if not isinstance(table, list) or len(table) != shape[0]:
            problems.append(f"`{where}` must be a {shape[0]} x {shape[1]} table of numbers")
            return reweighting
        rows = []
        for row in table:
            if not isinstance(row, list) or len(row) != shape[1]:
                problems.append(f"`{where}` must be a {shape[0]} x {shape[1]} table of numbers")
                return reweighting
            rows.append(tuple(as_number(v, where, problems) for v in row))
        tables.append(tuple(rows))
    return replace(reweighting, hists=tuple(tables))


def parse_branch_magic(value: Any, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """(substring, replacement) pairs applied to ROOT branch names."""
    raw = as_mapping(value, "branch_magic", problems)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        problems.append(f"`branch_magic` must map substrings to replacements, got {value!r}")
        return ()
    return tuple(raw.items())


def parse_file_magic(value: Any, problems: list[str]) -> tuple[FileMagic, ...]:
    """Per-file constant columns: name -> {regex on the file path: value}."""
    magic = []
    for name, patterns in as_mapping(value, "file_magic", problems).items():
        where = f"file_magic.{name}"
        pairs = tuple(
            (str(regex), as_number(number, f"{where}.{regex}", problems))
            for regex, number in as_mapping(patterns, where, problems).items()
        )
        magic.append(FileMagic(str(name), pairs))
    return tuple(magic)


def parse_bucketing(value: Any, problems: list[str]) -> Bucketing | None:
    """weaver's batch bucketing: a variable and a bin count or bin edges."""
    if value is None:
        return None
    raw = as_mapping(value, "bucketing", problems)
    reject_unknown(raw, ("var", "bins"), "bucketing", problems)
    var, bins = raw.get("var"), raw.get("bins")
    if not isinstance(var, str):
        problems.append(f"`bucketing.var` must be a variable name, got {var!r}")
    if isinstance(bins, list):
        return Bucketing(str(var), tuple(as_number(b, "bucketing.bins", problems) for b in bins))
    if isinstance(bins, bool) or not isinstance(bins, int):
        problems.append(f"`bucketing.bins` must be a number of bins or a list of edges: {bins!r}")
        bins = 1
    return Bucketing(str(var), bins)
