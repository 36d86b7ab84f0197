"""weaver-core YAML data configs as typed, frozen objects.

Physicists bring the data configs they train with in weaver (e.g. the TopLandscape configs of
the particle_transformer repository); ``parser`` reads every key weaver reads into these
classes, with weaver's defaults, and ``writer`` writes them back in weaver's format. The
classes hold data only: nothing here reads files or imports the rest of the package.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

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
    """A column computed from others by an expression (see trainyard.data.weaver.expressions)."""

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
