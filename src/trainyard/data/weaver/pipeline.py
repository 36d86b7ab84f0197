"""weaver-core's data loading, reproduced: files + a weaver data config -> the arrays weaver makes.

The steps and their order are weaver's: read only the branches the config needs, apply the
selection (``selection`` in training, ``test_time_selection`` otherwise), compute new_variables,
build labels, then standardise, clip and pad each input group. The result is a dict of numpy
arrays named as weaver names them:

    ``_<group>``  float32 (N, C, L) per input group; for length null (N, C), or (N,) if C = 1
    ``_label_``   int64 (N,) class index, for ``labels.type: simple`` (custom: one per name)
    observers     (N,) per observer, and per monitor variable (standardised and padded, (N, L),
                  when it is also an input variable, as on weaver's Parquet path)
    ``_weight_``  float32 (N,) in training, when the config has a ``weights`` section

Auto standardisation and reweighting histograms are computed from training files, written back
next to the config as weaver's ``<name>.<md5>.auto.yaml`` (weaver picks that file up too), and
found there again when loading test files.

Array legend (suffixes give the shape): N events, C variables of a group, L slots per event.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa

from trainyard.data.reader import MissingBranchesError, read_branches, resolve_files
from trainyard.data.weaver import columns, preprocess
from trainyard.data.weaver.expressions import evaluate, resolve_dependencies, variable_names
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.data.weaver.types import (
    PrecomputedWeights,
    Reweighting,
    SimpleLabels,
    WeaverDataConfig,
)
from trainyard.data.weaver.weights import make_reweight_hists, reweight_inputs, weights_of
from trainyard.data.weaver.writer import auto_config_path, write_weaver_config
from trainyard.errors import ConfigError, DataError
from trainyard.suggest import did_you_mean

logger = logging.getLogger(__name__)

FilePatterns = str | Path | Sequence[str | Path]
TRAINING_FLAG = "aux_training_"
"""The per-event column weaver adds (True in training) for expressions that need it."""


def build_arrays(
    table: ak.Array | pa.Table, config: WeaverDataConfig, *, training: bool = False
) -> dict[str, np.ndarray]:
    """weaver's arrays for the events of ``table`` (see the module docstring for the keys).

    ``training`` picks weaver's training behaviour: ``selection`` instead of
    ``test_time_selection``, the label sanity check, and weights. The config must be complete:
    no "auto" centers left and, for training with reweighting, histograms made (``load_arrays``
    and ``prepare_config`` do both from files).
    """
    events = ak.from_arrow(table) if isinstance(table, pa.Table) else table
    if not isinstance(events, ak.Array) or not events.fields:
        raise DataError(
            f"build_arrays needs a table with named columns (awkward record array or "
            f"pyarrow.Table), got {type(table).__name__}; read files with load_arrays instead"
        )
    _check_complete(config, training=training)
    return _build(events, config, training=training, where="the given table")


def load_arrays(
    files: FilePatterns,
    config: WeaverDataConfig | str | Path,
    *,
    training: bool = False,
    treename: str | None = None,
    skip_bad_files: bool = False,
    base_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """Read ``files`` (globs, paths, directories of Parquet) and build weaver's arrays.

    With ``training`` a config that still needs auto standardisation or reweighting histograms
    is completed from these files first (see ``prepare_config``); otherwise the completed
    ``*.auto.yaml`` next to the config is used. ``treename`` (or the config's) picks the ROOT tree;
    ``skip_bad_files`` skips and logs unreadable files instead of stopping.
    """
    config = _as_config(config)
    paths = resolve_files(files, base_dir=base_dir)
    config = _completed(config, paths, training, treename, skip_bad_files)
    events = _read(paths, config, _requested(config, training), None, treename, skip_bad_files)
    return _build(events, config, training=training, where=_describe(paths))


def prepare_config(
    files: FilePatterns,
    config: WeaverDataConfig | str | Path,
    *,
    output: str | Path | None = None,
    treename: str | None = None,
    skip_bad_files: bool = False,
    base_dir: Path | None = None,
) -> WeaverDataConfig:
    """Compute what the config leaves to the data, as weaver does before training, and save it.

    Centers left "auto" come from the first ``preprocess.data_fraction`` of each file after the
    training selection; missing reweighting histograms from all events after it. The result is
    written to ``output``, by default weaver's ``<name>.<md5>.auto.yaml`` next to the config
    (nothing is written for a config that was not read from a file and has no ``output``).
    """
    config = _as_config(config)
    paths = resolve_files(files, base_dir=base_dir)
    original = config
    pending = [config.variables[name] for name in config.pending_standardization]
    if pending:
        requested = _selection_names(config, training=True)
        requested.update({v.name: "inputs (auto standardisation)" for v in pending})
        sample_range = (0.0, config.preprocess.data_fraction)
        events = _read(paths, config, requested, sample_range, treename, skip_bad_files)
        events = _prepare(events, config, requested, training=True, where=_describe(paths))
        params = preprocess.compute_standardization(events, pending)
        config = preprocess.apply_standardization(config, params)
    if isinstance(config.weights, Reweighting) and config.needs_reweight_hists:
        requested = _selection_names(config, training=True)
        requested.update(_weight_names(config.weights))
        events = _read(paths, config, requested, None, treename, skip_bad_files)
        events = _prepare(events, config, requested, training=True, where=_describe(paths))
        hists = make_reweight_hists(*reweight_inputs(events, config.weights), config.weights)
        tables = tuple(
            tuple(tuple(float(v) for v in row) for row in hists[name])
            for name in config.weights.classes
        )
        config = replace(config, weights=replace(config.weights, hists=tables))
    if config == original:
        return original
    if output is None and original.source is not None:
        output = auto_config_path(original.source)
    if output is not None:
        write_weaver_config(config, output)
        logger.info("wrote the completed weaver data config to %s", output)
        config = replace(config, source=Path(output))
    return config


def _as_config(config: WeaverDataConfig | str | Path) -> WeaverDataConfig:
    """Accept a parsed config or the path of a YAML file."""
    return config if isinstance(config, WeaverDataConfig) else load_weaver_config(config)


def _completed(
    config: WeaverDataConfig,
    paths: list[Path],
    training: bool,
    treename: str | None,
    skip_bad_files: bool,
) -> WeaverDataConfig:
    """The config with standardisation (and, for training, histograms) filled in."""
    if not _missing_pieces(config, training=training):
        return config
    if config.source is not None and auto_config_path(config.source).is_file():
        auto_path = auto_config_path(config.source)
        if auto_path != config.source:
            logger.info("using the auto-generated config %s", auto_path)
            config = load_weaver_config(auto_path)
    if training and _missing_pieces(config, training=True):
        config = prepare_config(paths, config, treename=treename, skip_bad_files=skip_bad_files)
    _check_complete(config, training=training)
    return config


def _missing_pieces(config: WeaverDataConfig, *, training: bool) -> list[str]:
    """What the config still needs from training data, one line per piece."""
    missing = []
    if config.pending_standardization:
        missing.append(f"centers of {list(config.pending_standardization)} are still 'auto'")
    if training and config.needs_reweight_hists:
        missing.append("`weights.reweight_hists` have not been made")
    return missing


def _check_complete(config: WeaverDataConfig, *, training: bool) -> None:
    """Refuse a config that still needs training data, saying how to complete it."""
    missing = _missing_pieces(config, training=training)
    if missing:
        where = f" (looked for {auto_config_path(config.source)})" if config.source else ""
        raise ConfigError(
            [
                f"{line}; compute them from the training files with load_arrays(..., "
                f"training=True) or prepare_config(), then load the *.auto.yaml it writes{where}"
                for line in missing
            ],
            source=str(config.source or "weaver data config"),
        )


def _selection_key(config: WeaverDataConfig, *, training: bool) -> str:
    """The config key of the selection in force, for messages."""
    return "selection" if training or not config.test_time_selection else "test_time_selection"


def _selection_names(config: WeaverDataConfig, *, training: bool) -> dict[str, str]:
    """The names the selection in force reads, each with its config key."""
    selection = config.selection_for(training=training)
    key = _selection_key(config, training=training)
    return {name: key for name in variable_names(selection)} if selection else {}


def _weight_names(weights: PrecomputedWeights | Reweighting) -> dict[str, str]:
    """The names the weights read, each with its config key."""
    if isinstance(weights, PrecomputedWeights):
        return {
            name: "weights.weight_branches"
            for branch in weights.branches
            for name in variable_names(branch)
        }
    names = {weights.x_var: "weights.reweight_vars", weights.y_var: "weights.reweight_vars"}
    names.update({name: "weights.reweight_classes" for name in weights.classes})
    if weights.base_weight:
        names.update({n: "weights.reweight_basewgt" for n in variable_names(weights.base_weight)})
    return names


def _requested(config: WeaverDataConfig, training: bool) -> dict[str, str]:
    """Every name the arrays need, each with the config key that needs it first."""
    requested = _selection_names(config, training=training)
    for group in config.inputs:
        for name in group.variable_names:
            requested.setdefault(name, f"inputs.{group.name}")
    if isinstance(config.labels, SimpleLabels):
        for expression in config.labels.classes:
            for name in variable_names(expression):
                requested.setdefault(name, "labels.value")
    else:
        for label in config.labels.expressions:
            for name in variable_names(label.expression):
                requested.setdefault(name, f"labels.value.{label.name}")
    for name in config.observers:
        requested.setdefault(name, "observers")
    for name in config.monitor_variables:
        requested.setdefault(name, "monitor_variables")
    if training and config.weights is not None:
        for name, key in _weight_names(config.weights).items():
            requested.setdefault(name, key)
    return requested


def _read(
    paths: list[Path],
    config: WeaverDataConfig,
    requested: Mapping[str, str],
    load_range: tuple[float, float] | None,
    treename: str | None,
    skip_bad_files: bool,
) -> ak.Array:
    """Read the branches behind ``requested``; a missing one is explained in config terms."""
    dependencies = resolve_dependencies(requested, config.expressions)
    provided = {magic.name for magic in config.file_magic} | {TRAINING_FLAG}
    branches = [name for name in dependencies.branches if name not in provided]
    try:
        return read_branches(
            paths,
            branches,
            treename=treename or config.treename,
            load_range=load_range,
            skip_bad_files=skip_bad_files,
            branch_magic=dict(config.branch_magic),
            file_magic={magic.name: magic.patterns for magic in config.file_magic},
        )
    except MissingBranchesError as error:
        raise _missing_error(
            error.missing, dependencies.branches, error.available, config, str(error.path)
        ) from None


def _missing_error(
    missing: Sequence[str],
    needed_by: Mapping[str, str],
    available: Sequence[str],
    config: WeaverDataConfig,
    where: str,
) -> DataError:
    """Say which config key needs each missing name, what exists, and the closest match."""
    new_variables = [variable.name for variable in config.new_variables]
    lines = []
    for name in missing:
        hint = did_you_mean(name, [*available, *new_variables], before="; ", after="")
        lines.append(
            f"{name!r} (needed by {needed_by[name]}) is neither a branch of {where} nor a "
            f"new_variable{hint}"
        )
    return DataError(
        "\n".join(lines) + f"\navailable branches: {sorted(available)}; new_variables: "
        f"{new_variables}. Fix the name in the config or define it under new_variables"
    )


def _prepare(
    events: ak.Array,
    config: WeaverDataConfig,
    requested: Mapping[str, str],
    *,
    training: bool,
    where: str,
) -> ak.Array:
    """Keep the needed columns, apply the selection, and compute the needed new_variables."""
    expressions = config.expressions
    dependencies = resolve_dependencies(requested, expressions)
    missing = [n for n in dependencies.branches if n not in events.fields and n != TRAINING_FLAG]
    if missing:
        raise _missing_error(missing, dependencies.branches, events.fields, config, where)
    columns = {name: events[name] for name in dependencies.branches if name in events.fields}
    if TRAINING_FLAG in dependencies.branches:
        columns[TRAINING_FLAG] = np.full(len(events), training)
    events = ak.zip(columns, depth_limit=1)

    def compute(names: Sequence[str]) -> None:
        nonlocal events
        for name in names:
            if name not in events.fields:
                value = evaluate(expressions[name], events, where=f"new_variables.{name}")
                events = ak.with_field(events, value, name)

    selection = config.selection_for(training=training)
    if selection:
        key = _selection_key(config, training=training)
        needed = dict.fromkeys(variable_names(selection), key)
        compute(resolve_dependencies(needed, expressions).new_variables)
        is_kept = evaluate(selection, events, where=key)
        if isinstance(is_kept, ak.Array) and is_kept.ndim != 1:
            raise ConfigError(
                [f"`{key}`: `{selection}` must give one boolean per event, got {is_kept.type}"],
                source=str(config.source or "weaver data config"),
            )
        is_kept_N = np.asarray(ak.fill_none(ak.values_astype(is_kept, bool), False))
        num_events = len(events)
        events = events[is_kept_N]
        if len(events) == 0:
            raise DataError(
                f"`{key}` `{selection}` keeps none of the {num_events} events of {where}; "
                "loosen the selection or check that these are the intended files"
            )
    compute(dependencies.new_variables)
    return events


def _build(
    events: ak.Array, config: WeaverDataConfig, *, training: bool, where: str
) -> dict[str, np.ndarray]:
    """The arrays of a complete config from events that hold the needed branches."""
    events = _prepare(events, config, _requested(config, training), training=training, where=where)
    arrays: dict[str, np.ndarray] = {}
    for name in config.observers:
        arrays[name] = columns.per_event(events[name], name, "observers")
    if isinstance(config.labels, SimpleLabels):
        arrays["_label_"] = _class_index(events, config.labels, training=training)
    else:
        for label in config.labels.expressions:
            value = evaluate(label.expression, events, where=f"labels.value.{label.name}")
            arrays[label.name] = columns.as_numpy(value, label.name)
    transformed: dict[str, np.ndarray] = {}
    for group in config.inputs:
        arrays_C = []
        for variable in group.variables:
            if variable.name not in transformed:
                column = events[variable.name]
                transformed[variable.name] = preprocess.variable_array(column, variable, group)
            arrays_C.append(transformed[variable.name])
        arrays[f"_{group.name}"] = preprocess.group_array(group, arrays_C)
    for name in config.monitor_variables:
        if name in transformed:
            arrays[name] = transformed[name]
        else:
            arrays[name] = columns.per_event(events[name], name, "monitor_variables")
    if training and config.weights is not None:
        arrays["_weight_"] = weights_of(events, config.weights)
    return arrays


def _class_index(events: ak.Array, labels: SimpleLabels, *, training: bool) -> np.ndarray:
    """Index of the class flag that is set, as weaver's argmax; training checks exactly one."""
    flags_NC = np.stack(
        [
            columns.as_numpy(evaluate(flag, events, where=f"labels.value[{i}]"), flag)
            for i, flag in enumerate(labels.classes)
        ],
        axis=1,
    )
    if training:
        num_set_N = flags_NC.sum(axis=1)
        if not (num_set_N == 1).all():
            raise DataError(
                f"labels {list(labels.classes)} must mark exactly one class per event in "
                f"training, but {int((num_set_N == 0).sum())} event(s) have none and "
                f"{int((num_set_N > 1).sum())} several; fix the label expressions or add a "
                "selection that removes such events"
            )
    return np.argmax(flags_NC, axis=1).astype(np.int64)


def _describe(paths: Sequence[Path]) -> str:
    """The files, named in full up to five, for messages."""
    shown = ", ".join(str(path) for path in paths[:5])
    return f"files [{shown}{f', ... ({len(paths)} in all)' if len(paths) > 5 else ''}]"
