"""The preprocessing JSON that weaver-core writes next to an exported model, from our config.

CMSSW's ONNX jet-tag producers read it to build the model's inputs from reconstructed
particles: for each input group in ``input_names`` order the variables (``var_names``), the
slots per jet (``var_length``), and per variable how to standardise it
((x - median) * norm_factor, clipped to [lower_bound, upper_bound]), what replaces an
infinite value, and what fills padded slots. ``output_names`` names the classes, in the
order of the model's output. The keys and their meaning are weaver-core's
(``DataConfig.export_json``); the tests compare our file with the one it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainyard.data.weaver.types import InputGroup, InputVariable, SimpleLabels, WeaverDataConfig
from trainyard.errors import ConfigError

PREPROCESS_FILE = "preprocess.json"
UNBOUNDED = 1e32
"""weaver's bound for a variable that is not standardised (center null): never clipped."""
REPLACE_INF_VALUE = 0
"""weaver writes 0 for every variable: an infinite input becomes 0 before standardisation."""


def preprocess_json(config: WeaverDataConfig) -> dict[str, Any]:
    """weaver's preprocessing JSON for a completed data config (no "auto" centers left).

    Raises:
        ConfigError: the config still has "auto" centers, which only training data fixes.
    """
    if config.pending_standardization:
        raise ConfigError(
            [
                f"the centers of {list(config.pending_standardization)} are still 'auto'; "
                "the preprocessing JSON needs the values computed from the training files, "
                "which a trial writes next to the data config as weaver's *.auto.yaml"
            ],
            source=str(config.source or "weaver data config"),
        )
    labels = config.labels
    outputs = (
        list(labels.classes)
        if isinstance(labels, SimpleLabels)
        else {label.name: label.expression for label in labels.expressions}
    )
    document: dict[str, Any] = {
        "output_names": outputs,
        "input_names": [group.name for group in config.inputs],
    }
    for group in config.inputs:
        document[group.name] = _group_json(group)
    return document


def write_preprocess_json(document: dict[str, Any], folder: Path) -> Path:
    """Write a ``preprocess_json`` document as ``preprocess.json`` into ``folder`` (made if
    missing); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PREPROCESS_FILE
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def _group_json(group: InputGroup) -> dict[str, Any]:
    return {
        "var_names": list(group.variable_names),
        "var_infos": {variable.name: _variable_json(variable) for variable in group.variables},
        "var_length": group.length,
    }


def _variable_json(variable: InputVariable) -> dict[str, Any]:
    standardised = variable.center is not None
    return {
        "median": variable.center if standardised else 0,
        "norm_factor": variable.scale,
        "replace_inf_value": REPLACE_INF_VALUE,
        "lower_bound": variable.clip_min if standardised else -UNBOUNDED,
        "upper_bound": variable.clip_max if standardised else UNBOUNDED,
        "pad": variable.pad_value,
    }
