"""Read a weaver data config (a YAML file or a decoded mapping) into a WeaverDataConfig.

Every problem is collected and reported at once in one ConfigError: each helper appends one
line per problem (key path first, then what is wrong and what to do) and returns its best
guess. Defaults are weaver-core's, including for keys weaver would silently ignore or crash on.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from trainyard.data.weaver import fields
from trainyard.data.weaver.types import (
    CustomLabels,
    InputGroup,
    InputVariable,
    NewVariable,
    PadMode,
    Preprocess,
    SimpleLabels,
    WeaverDataConfig,
)
from trainyard.errors import ConfigError

TOP_LEVEL_KEYS = (
    "treename",
    "branch_magic",
    "file_magic",
    "selection",
    "test_time_selection",
    "preprocess",
    "new_variables",
    "inputs",
    "labels",
    "observers",
    "monitor_variables",
    "weights",
    "bucketing",
)
_GROUP_KEYS = ("length", "pad_mode", "vars")
_PREPROCESS_KEYS = ("method", "data_fraction", "params")
_PARAM_KEYS = ("length", "pad_mode", "center", "scale", "min", "max", "pad_value")
_VARIABLE_FORMAT = "[name, center, scale, clip_min, clip_max, pad_value] (all but name optional)"


def load_weaver_config(path: str | Path) -> WeaverDataConfig:
    """Read a weaver data config YAML file; every problem is reported in one ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            [f"no such file: {path.resolve()}; give the path of a weaver data config (*.yaml)"],
            source=str(path),
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(
            [f"not valid YAML at {where}: {getattr(error, 'problem', None) or error}"],
            source=str(path),
        ) from error
    return parse_weaver_config(raw, source=str(path), path=path)


def parse_weaver_config(
    raw: Any, *, source: str = "weaver data config", path: Path | None = None
) -> WeaverDataConfig:
    """Validate a decoded weaver data config mapping, with weaver's defaults for missing keys."""
    problems: list[str] = []
    parsed = _top_level(raw, problems)
    if problems or parsed is None:
        raise ConfigError(problems, source=source)
    return WeaverDataConfig(**parsed, source=path)


def _top_level(raw: Any, problems: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of WeaverDataConfig, or None when ``raw`` is not a mapping at all.

    As in weaver, a key whose value is null (e.g. an empty ``selection:``) takes its default.
    """
    if not isinstance(raw, Mapping):
        problems.append(
            f"the top level must be a mapping with keys such as inputs and labels, "
            f"got {type(raw).__name__}; is this a weaver data config?"
        )
        return None
    fields.reject_unknown(raw, TOP_LEVEL_KEYS, "top level", problems)
    preprocess, params = _preprocess(raw.get("preprocess"), problems)
    auto = preprocess.method == "auto"
    new_variables = tuple(
        NewVariable(name, expression)
        for name, expression in fields.as_expression_map(
            raw.get("new_variables"), "new_variables", problems
        )
        if name != expression  # weaver drops `x: x`: it just means "read branch x"
    )
    observers = fields.as_names(raw.get("observers"), "observers", problems)
    monitor_variables = fields.as_names(
        raw.get("monitor_variables"), "monitor_variables", problems
    )
    if observers and monitor_variables:
        problems.append(
            "`observers` and `monitor_variables` are both set; weaver allows only one, "
            "keep observers for evaluation or monitor_variables for training"
        )
    return {
        "inputs": _inputs(raw.get("inputs"), auto, params, problems),
        "labels": _labels(raw.get("labels"), problems),
        "preprocess": preprocess,
        "new_variables": new_variables,
        "selection": fields.as_optional_expression(raw.get("selection"), "selection", problems),
        "test_time_selection": fields.as_optional_expression(
            raw.get("test_time_selection"), "test_time_selection", problems
        ),
        "observers": observers,
        "monitor_variables": monitor_variables,
        "weights": fields.parse_weights(raw.get("weights"), problems),
        "treename": fields.as_optional_string(raw.get("treename"), "treename", problems),
        "branch_magic": fields.parse_branch_magic(raw.get("branch_magic"), problems),
        "file_magic": fields.parse_file_magic(raw.get("file_magic"), problems),
        "bucketing": fields.parse_bucketing(raw.get("bucketing"), problems),
    }


def _preprocess(value: Any, problems: list[str]) -> tuple[Preprocess, Mapping[str, Any] | None]:
    """The preprocess section and its ``params`` (present in weaver's *.auto.yaml files)."""
    raw = fields.as_mapping(value, "preprocess", problems)
    fields.reject_unknown(raw, _PREPROCESS_KEYS, "preprocess", problems)
    method = raw.get("method") or "manual"
    if not isinstance(method, str) or method.lower() not in ("manual", "auto"):
        problems.append(f"`preprocess.method` must be 'manual' or 'auto', got {method!r}")
        method = "manual"
    fraction = raw.get("data_fraction")
    data_fraction = 0.1
    if fraction is not None:
        data_fraction = fields.as_number(fraction, "preprocess.data_fraction", problems, 0.1)
        if not 0 < data_fraction <= 1:
            problems.append(f"`preprocess.data_fraction` must lie in (0, 1], got {fraction!r}")
            data_fraction = 0.1
    params = raw.get("params")
    if params is not None and not isinstance(params, Mapping):
        problems.append(f"`preprocess.params` must map variable names to settings, got {params!r}")
        params = None
    method = cast(Literal["manual", "auto"], method.lower())
    return Preprocess(method=method, data_fraction=data_fraction), params


def _inputs(
    value: Any, auto: bool, params: Mapping[str, Any] | None, problems: list[str]
) -> tuple[InputGroup, ...]:
    """The input groups; with ``params`` (a *.auto.yaml) variables take their settings there."""
    raw = fields.as_mapping(value, "inputs", problems)
    if not raw:
        problems.append("`inputs` must define at least one input group (length, pad_mode, vars)")
    groups = []
    for name, spec in raw.items():
        where = f"inputs.{name}"
        spec = fields.as_mapping(spec, where, problems)
        fields.reject_unknown(spec, _GROUP_KEYS, where, problems)
        length = spec.get("length")
        if "length" not in spec:
            problems.append(f"`{where}.length` is missing; give the slots per event, or null")
        elif length is not None and (
            isinstance(length, bool) or not isinstance(length, int) or length < 1
        ):
            problems.append(f"`{where}.length` must be a positive integer or null, got {length!r}")
            length = None
        pad_mode = str(spec.get("pad_mode", "constant")).lower()
        if pad_mode not in ("constant", "wrap"):
            problems.append(f"`{where}.pad_mode` must be 'constant' or 'wrap', got {pad_mode!r}")
            pad_mode = "constant"
        if str(name).endswith("_mask") and pad_mode != "constant":
            problems.append(
                f"`{where}.pad_mode` must be 'constant' for a mask input, as in weaver"
            )
        entries = spec.get("vars")
        if not isinstance(entries, list) or not entries:
            problems.append(f"`{where}.vars` must be a non-empty list of {_VARIABLE_FORMAT}")
            entries = []
        variables = []
        for index, entry in enumerate(entries):
            variable = _variable(entry, f"{where}.vars[{index}]", auto, problems)
            if variable is not None and params is not None:
                variable = _from_params(variable.name, params, where, length, pad_mode, problems)
            if variable is not None:
                variables.append(variable)
        groups.append(InputGroup(str(name), length, cast(PadMode, pad_mode), tuple(variables)))
    _check_consistent(groups, problems)
    if params is not None:
        used = {variable.name for group in groups for variable in group.variables}
        for name in params:
            if name not in used:
                problems.append(
                    f"`preprocess.params.{name}` is not an input variable; remove it or add it "
                    "to an input group"
                )
    return tuple(groups)


def _variable(entry: Any, where: str, auto: bool, problems: list[str]) -> InputVariable | None:
    """One ``vars`` entry: a bare name or weaver's positional list."""
    items = [entry] if isinstance(entry, str) else entry
    if not isinstance(items, list) or not 1 <= len(items) <= 6 or not isinstance(items[0], str):
        problems.append(f"`{where}` must be a name or {_VARIABLE_FORMAT}, got {entry!r}")
        return None
    name, *rest = items
    center = rest[0] if rest else ("auto" if auto else None)
    if center is not None and center != "auto":
        center = fields.as_number(center, f"{where} center", problems)
    settings = [
        fields.as_number(value, f"{where} {label}", problems)
        for label, value in zip(
            ("scale", "clip_min", "clip_max", "pad_value"), rest[1:], strict=False
        )
    ]
    defaults = [1.0, -5.0, 5.0, 0.0]
    scale, clip_min, clip_max, pad_value = settings + defaults[len(settings) :]
    return InputVariable(name, center, scale, clip_min, clip_max, pad_value)


def _from_params(
    name: str,
    params: Mapping[str, Any],
    group: str,
    length: int | None,
    pad_mode: str,
    problems: list[str],
) -> InputVariable | None:
    """A variable as given by ``preprocess.params``, which weaver prefers over ``vars``."""
    where = f"preprocess.params.{name}"
    if name not in params:
        problems.append(f"`{where}` is missing but {name} is in `{group}`; add its settings")
        return None
    raw = fields.as_mapping(params[name], where, problems)
    fields.reject_unknown(raw, _PARAM_KEYS, where, problems)
    missing = [key for key in _PARAM_KEYS[:-1] if key not in raw]
    if missing:
        problems.append(f"`{where}` lacks {', '.join(missing)}")
        return None
    if raw["length"] != length or str(raw["pad_mode"]).lower() != pad_mode:
        problems.append(
            f"`{where}` has length {raw['length']!r}, pad_mode {raw['pad_mode']!r} but "
            f"`{group}` has {length!r}, {pad_mode!r}; make them agree"
        )
    center = raw["center"]
    if center is not None and center != "auto":
        center = fields.as_number(center, f"{where}.center", problems)
    return InputVariable(
        name,
        center,
        fields.as_number(raw["scale"], f"{where}.scale", problems, 1.0),
        fields.as_number(raw["min"], f"{where}.min", problems, -5.0),
        fields.as_number(raw["max"], f"{where}.max", problems, 5.0),
        fields.as_number(raw.get("pad_value", 0), f"{where}.pad_value", problems),
    )


def _check_consistent(groups: list[InputGroup], problems: list[str]) -> None:
    """A variable used in several groups needs one setting, because weaver keeps one per name."""
    first: dict[str, tuple[InputGroup, InputVariable]] = {}
    for group in groups:
        for variable in group.variables:
            seen = first.setdefault(variable.name, (group, variable))
            other_group, other = seen
            setting = (variable, group.length, group.pad_mode)
            if setting != (other, other_group.length, other_group.pad_mode):
                problems.append(
                    f"variable {variable.name!r} is in `inputs.{other_group.name}` and "
                    f"`inputs.{group.name}` with different settings; weaver keeps one setting "
                    "per variable, so make them equal or define a renamed copy in new_variables"
                )


def _labels(value: Any, problems: list[str]) -> SimpleLabels | CustomLabels:
    """``simple``: a list of 0/1 class expressions; ``custom``: name -> expression."""
    raw = fields.as_mapping(value, "labels", problems)
    fields.reject_unknown(raw, ("type", "value"), "labels", problems)
    kind, classes = raw.get("type"), raw.get("value")
    if kind == "custom":
        expressions = fields.as_expression_map(classes, "labels.value", problems)
        if not expressions:
            problems.append("`labels.value` must map each label name to an expression")
        return CustomLabels(tuple(NewVariable(n, e) for n, e in expressions))
    if kind != "simple":
        problems.append(
            f"`labels.type` must be 'simple' (value: list of 0/1 class variables) or 'custom' "
            f"(value: name -> expression), got {kind!r}"
        )
    if not isinstance(classes, list) or not classes:
        problems.append(
            f"`labels.value` must be a non-empty list of 0/1 class variables, got {classes!r}"
        )
        classes = []
    return SimpleLabels(
        tuple(
            fields.as_expression(c, f"labels.value[{i}]", problems) for i, c in enumerate(classes)
        )
    )
