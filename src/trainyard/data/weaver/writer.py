"""A WeaverDataConfig back in weaver's YAML format, and where weaver keeps completed configs.

``to_weaver_mapping`` gives a config weaver itself loads, which is how auto-computed
standardisation and reweighting histograms are saved (as weaver's ``*.auto.yaml``), and how a
staged dataset records the config that made it.
"""

import hashlib
from pathlib import Path
from typing import Any

import yaml

from trainyard.data.weaver.types import (
    CustomLabels,
    InputGroup,
    InputVariable,
    PrecomputedWeights,
    Reweighting,
    SimpleLabels,
    WeaverDataConfig,
)


def to_weaver_mapping(config: WeaverDataConfig) -> dict[str, Any]:
    """The config in weaver's YAML format; weaver and ``parser.parse_weaver_config`` load it equal.

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
