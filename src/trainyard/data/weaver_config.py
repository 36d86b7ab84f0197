"""weaver-core YAML data configs as typed, frozen objects, and back to weaver's format.

Physicists bring the data configs they train with in weaver (e.g. particle_transformer's
``top_kin.yaml``); this module reads every key weaver reads, with weaver's defaults, and reports
every problem at once as a ConfigError, including keys weaver would silently ignore or crash on.
``to_weaver_mapping`` writes a config weaver itself loads, which is how auto-computed
standardisation and reweighting histograms are saved (as weaver's ``*.auto.yaml``).
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from trainyard.errors import ConfigError

PadMode = Literal["constant", "wrap"]
Center = float | Literal["auto"] | None
"""A number to subtract, "auto" (computed from data), or None (no standardisation, no clip)."""


@dataclass(frozen=True)
class InputVariable:
    """One variable of an input group and how it is standardised: (x - center) * scale, clipped."""

    name: str
    center: Center
    scale: float = 1.0
    clip_min: float = -5.0
    clip_max: float = 5.0
    pad_value: float = 0.0
    """Value of padded slots with pad_mode constant (never standardised)."""


@dataclass(frozen=True)
class InputGroup:
    """One model input, weaver's ``_<name>`` array: float32 (N, len(variables), length)."""

    name: str
    length: int | None
    """Slots per event; None for one value per event (the array is then (N, C), or (N,))."""
    pad_mode: PadMode
    variables: tuple[InputVariable, ...]

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(variable.name for variable in self.variables)


@dataclass(frozen=True)
class Preprocess:
    """How centers missing from the config are found: "auto" computes them from data."""

    method: Literal["manual", "auto"] = "manual"
    data_fraction: float = 0.1
    """Leading fraction of each file that auto standardisation reads."""


@dataclass(frozen=True)
class NewVariable:
    """A column computed from others by an expression (see trainyard.data.expressions)."""

    name: str
    expression: str


@dataclass(frozen=True)
class SimpleLabels:
    """One 0/1 expression per class; the label is the index of the class that is 1."""

    classes: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return ("_label_",)


@dataclass(frozen=True)
class CustomLabels:
    """Each label is a named expression, returned as it evaluates."""

    expressions: tuple[NewVariable, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.expressions)


@dataclass(frozen=True)
class PrecomputedWeights:
    """The event weight is the product of these branches (or expressions)."""

    branches: tuple[str, ...]


@dataclass(frozen=True)
class Reweighting:
    """Weights that flatten (or match to class 0) each class's 2-D histogram of two variables."""

    method: Literal["flat", "ref"]
    x_var: str
    x_bins: tuple[float, ...]
    y_var: str
    y_bins: tuple[float, ...]
    classes: tuple[str, ...]
    """0/1 variables, one per class that gets weights; other events get weight 0."""
    class_weights: tuple[float, ...]
    threshold: float = 10.0
    """Percentile that sets the reference bin content (flat) or the ratio cap (ref)."""
    discard_under_overflow: bool = True
    base_weight: str | None = None
    """An expression multiplied into the weights (e.g. generator weights)."""
    hists: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    """Per class (in ``classes`` order) the (x bins, y bins) weight table; None: not made yet."""

    def hist_arrays(self) -> dict[str, np.ndarray]:
        """The weight tables as float32 arrays by class name, as weaver keeps them."""
        if self.hists is None:
            raise ValueError("the reweighting histograms have not been made yet")
        return {
            name: np.asarray(hist, dtype=np.float32)
            for name, hist in zip(self.classes, self.hists, strict=True)
        }


@dataclass(frozen=True)
class FileMagic:
    """A per-file constant column: the value of the first regex that matches the file path."""

    name: str
    patterns: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Bucketing:
    """weaver's bucketing of shuffled batches by length; parsed so such configs load, unused."""

    var: str
    bins: int | tuple[float, ...]


@dataclass(frozen=True)
class WeaverDataConfig:
    """A weaver-core data config; see weaver-core's docs for the meaning of each key."""

    inputs: tuple[InputGroup, ...]
    labels: SimpleLabels | CustomLabels
    preprocess: Preprocess = Preprocess()
    new_variables: tuple[NewVariable, ...] = ()
    selection: str | None = None
    test_time_selection: str | None = None
    """As written; None means the training selection (see ``selection_for``)."""
    observers: tuple[str, ...] = ()
    monitor_variables: tuple[str, ...] = ()
    weights: PrecomputedWeights | Reweighting | None = None
    treename: str | None = None
    branch_magic: tuple[tuple[str, str], ...] = ()
    """(substring, replacement) pairs applied to ROOT branch names before reading."""
    file_magic: tuple[FileMagic, ...] = ()
    bucketing: Bucketing | None = None
    source: Path | None = field(default=None, compare=False)
    """The YAML file it was read from, if any."""

    def selection_for(self, *, training: bool) -> str | None:
        """weaver applies ``selection`` in training, ``test_time_selection`` (or it) otherwise."""
        return self.selection if training else (self.test_time_selection or self.selection)

    @property
    def expressions(self) -> dict[str, str]:
        """new_variables as name -> expression (a fresh dict)."""
        return {variable.name: variable.expression for variable in self.new_variables}

    @property
    def variables(self) -> dict[str, InputVariable]:
        """Every input variable once, in order of first appearance."""
        found: dict[str, InputVariable] = {}
        for group in self.inputs:
            for variable in group.variables:
                found.setdefault(variable.name, variable)
        return found

    @property
    def pending_standardization(self) -> tuple[str, ...]:
        """Variables whose center is still "auto"; they must be computed from data first."""
        return tuple(name for name, v in self.variables.items() if v.center == "auto")

    @property
    def needs_reweight_hists(self) -> bool:
        """True when the weights section asks for histograms that have not been made yet."""
        return isinstance(self.weights, Reweighting) and self.weights.hists is None


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
    # The parser builds the classes above, so it is imported here, not at the top.
    from trainyard.data._weaver_parser import parse_top_level

    problems: list[str] = []
    fields = parse_top_level(raw, problems)
    if problems or fields is None:
        raise ConfigError(problems, source=source)
    return WeaverDataConfig(**fields, source=path)


def to_weaver_mapping(config: WeaverDataConfig) -> dict[str, Any]:
    """The config in weaver's YAML format; weaver and ``parse_weaver_config`` load it equal.

    Variables are written in full ([name, center, scale, min, max, pad_value]); a config whose
    auto standardisation is done also gets weaver's ``preprocess.params`` section.
    """
    mapping: dict[str, Any] = {}
    if config.treename is not None:
        mapping["treename"] = config.treename
    if config.branch_magic:
        mapping["branch_magic"] = dict(config.branch_magic)
    if config.file_magic:
        mapping["file_magic"] = {m.name: dict(m.patterns) for m in config.file_magic}
    mapping["selection"] = config.selection
    mapping["test_time_selection"] = config.test_time_selection
    mapping["new_variables"] = config.expressions
    preprocess: dict[str, Any] = {
        "method": config.preprocess.method,
        "data_fraction": config.preprocess.data_fraction,
    }
    if config.preprocess.method == "auto" and not config.pending_standardization:
        preprocess["params"] = {
            variable.name: _variable_params(group, variable)
            for group in config.inputs
            for variable in group.variables
        }
    mapping["preprocess"] = preprocess
    mapping["inputs"] = {
        group.name: {
            "length": group.length,
            "pad_mode": group.pad_mode,
            "vars": [
                [v.name, v.center, v.scale, v.clip_min, v.clip_max, v.pad_value]
                for v in group.variables
            ],
        }
        for group in config.inputs
    }
    if isinstance(config.labels, SimpleLabels):
        mapping["labels"] = {"type": "simple", "value": list(config.labels.classes)}
    else:
        mapping["labels"] = {"type": "custom", "value": _expression_map(config.labels)}
    mapping["observers"] = list(config.observers)
    mapping["monitor_variables"] = list(config.monitor_variables)
    mapping["weights"] = _weights_mapping(config.weights)
    if config.bucketing is not None:
        bins = config.bucketing.bins
        mapping["bucketing"] = {
            "var": config.bucketing.var,
            "bins": bins if isinstance(bins, int) else list(bins),
        }
    return mapping


def write_weaver_config(config: WeaverDataConfig, path: str | Path) -> Path:
    """Write ``config`` as weaver YAML to ``path`` (written whole, then renamed into place)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(to_weaver_mapping(config), sort_keys=False))
    temporary.replace(path)
    return path


def auto_config_path(config_path: str | Path) -> Path:
    """Where weaver keeps the auto-generated config of ``config_path``: name.<md5>.auto.yaml.

    The md5 of the original file's bytes is in the name, so editing the config orphans it.
    """
    config_path = Path(config_path)
    if config_path.name.endswith(".auto.yaml"):
        return config_path
    digest = hashlib.md5(config_path.read_bytes()).hexdigest()
    stem = config_path.name.removesuffix(".yaml")
    return config_path.with_name(f"{stem}.{digest}.auto.yaml")


def _variable_params(group: InputGroup, variable: InputVariable) -> dict[str, Any]:
    """One entry of weaver's ``preprocess.params``."""
    return {
        "length": group.length,
        "pad_mode": group.pad_mode,
        "center": variable.center,
        "scale": variable.scale,
        "min": variable.clip_min,
        "max": variable.clip_max,
        "pad_value": variable.pad_value,
    }


def _expression_map(labels: CustomLabels) -> dict[str, str]:
    return {label.name: label.expression for label in labels.expressions}


def _weights_mapping(weights: PrecomputedWeights | Reweighting | None) -> dict[str, Any] | None:
    if weights is None:
        return None
    if isinstance(weights, PrecomputedWeights):
        return {"use_precomputed_weights": True, "weight_branches": list(weights.branches)}
    mapping: dict[str, Any] = {
        "use_precomputed_weights": False,
        "reweight_method": weights.method,
        "reweight_vars": {
            weights.x_var: list(weights.x_bins),
            weights.y_var: list(weights.y_bins),
        },
        "reweight_classes": list(weights.classes),
        "class_weights": list(weights.class_weights),
        "reweight_threshold": weights.threshold,
        "reweight_discard_under_overflow": weights.discard_under_overflow,
        "reweight_basewgt": weights.base_weight,
    }
    if weights.hists is not None:
        mapping["reweight_hists"] = {
            name: [list(row) for row in hist]
            for name, hist in zip(weights.classes, weights.hists, strict=True)
        }
    return mapping
