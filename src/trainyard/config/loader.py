"""Read an experiment file once, report every problem at once, and resolve relative paths.

Messages follow one shape: "`key.path`: what is wrong; what is allowed or how to fix".
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trainyard.config._strict import SECRET_VALUE_ERROR, SECTION_ERROR
from trainyard.config.schema import SEARCH_SPACE_TYPES, DataSpec, ExperimentConfig
from trainyard.config.tracking import MlflowSpec, TensorBoardSpec, TrackingSpec
from trainyard.errors import ConfigError
from trainyard.suggest import did_you_mean

_UNION_TAGS = {"constant", *SEARCH_SPACE_TYPES}


def load_experiment(path: Path | str, *, base_dir: Path | None = None) -> ExperimentConfig:
    """Parse and validate an experiment file; data paths become absolute against `base_dir`.

    Raises:
        ConfigError: the file is missing, is not YAML, or has any invalid key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"no such file: {path.resolve()}"], source=str(path))
    config = parse_experiment_text(path.read_text(), source=str(path))
    return resolve_paths(config, base_dir or Path.cwd())


def parse_experiment_text(text: str, *, source: str) -> ExperimentConfig:
    """Validate an experiment file's text (a server gets it over HTTP); paths stay as written.

    Raises:
        ConfigError: not YAML, or any invalid key or value; `source` names the file.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"not valid YAML at {where}: {problem}"], source=source) from err
    return parse_experiment(raw, source=source)


def parse_experiment(raw: Any, *, source: str = "experiment") -> ExperimentConfig:
    """Validate a decoded experiment mapping (also used by workers to re-check their spec)."""
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(
            [f"the top level must be a mapping of keys (name, model, data, ...), got {kind}"],
            source=source,
        )
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, raw), source=source) from None


def resolve_paths(config: ExperimentConfig, base_dir: Path) -> ExperimentConfig:
    """Make data globs, the data config, a network file, a script's workdir and tracking
    folders absolute, so workers started elsewhere (SLURM, containers) and a Master resumed
    from another folder find them."""
    update: dict[str, Any] = {"tracking": _resolve_tracking(config.tracking, base_dir)}
    if config.data is not None:
        update["data"] = _resolve_data(config.data, base_dir)
    if config.model is not None and config.model.is_network_file():
        name = str(_absolute(config.model.name, base_dir))
        update["model"] = config.model.model_copy(update={"name": name})
    if config.entrypoint is not None:
        workdir = str(_absolute(config.entrypoint.workdir or ".", base_dir).resolve())
        update["entrypoint"] = config.entrypoint.model_copy(update={"workdir": workdir})
    return config.model_copy(update=update)


def _resolve_data(data: DataSpec, base_dir: Path) -> DataSpec:
    def absolute(pattern: str | list[str]) -> str | list[str]:
        if isinstance(pattern, list):
            return [str(_absolute(p, base_dir)) for p in pattern]
        return str(_absolute(pattern, base_dir))

    update = {"train": absolute(data.train), "val": absolute(data.val)}
    if data.config is not None:
        update["config"] = str(_absolute(data.config, base_dir))
    return DataSpec.model_validate(data.model_copy(update=update).model_dump())


def _resolve_tracking(tracking: TrackingSpec, base_dir: Path) -> TrackingSpec:
    update: dict[str, MlflowSpec | TensorBoardSpec] = {}
    if tracking.mlflow is not None and tracking.mlflow.is_local_path():
        uri = str(_absolute(tracking.mlflow.uri, base_dir))
        update["mlflow"] = tracking.mlflow.model_copy(update={"uri": uri})
    if tracking.tensorboard is not None:
        folder = str(_absolute(tracking.tensorboard.dir, base_dir))
        update["tensorboard"] = tracking.tensorboard.model_copy(update={"dir": folder})
    return tracking.model_copy(update=update)


def _absolute(pattern: str, base_dir: Path) -> Path:
    expanded = Path(pattern).expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded


def format_validation_error(
    err: ValidationError, raw: dict[str, Any], *, root: type[BaseModel] = ExperimentConfig
) -> list[str]:
    """One line per problem, with key paths as the user wrote them and did-you-mean hints.

    `root` is the model of the whole file (the experiment file, or the facility file).
    """
    problems = []
    for detail in err.errors():
        loc = _user_loc(detail["loc"])
        message = str(detail["msg"]).removeprefix("Value error, ")
        if not loc and message.startswith("`"):
            # A check across sections names the key path of each of its lines itself.
            problems += message.splitlines()
            continue
        key_path = ".".join(str(part) for part in loc) or "(top level)"
        problems.append(f"`{key_path}`: {_describe(detail, loc, root)}")
    return problems


def _user_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags (`hyperparameters.lr.log.min` -> `hyperparameters.lr.min`)."""
    if len(loc) >= 3 and loc[0] == "hyperparameters" and loc[2] in _UNION_TAGS:
        return (*loc[:2], *loc[3:])
    return tuple(part for part in loc if part not in ("function-after[_exactly_one(), Length]",))


def _describe(detail: Any, loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(loc, root)
    if kind == "missing":
        return "required key is missing"
    if kind in ("literal_error", "enum"):
        allowed = detail.get("ctx", {}).get("expected", "")
        hint = did_you_mean(detail["input"], re.findall(r"'([^']*)'", allowed))
        return f"{detail['input']!r} is not allowed; {hint}use one of {allowed}"
    message = str(detail["msg"]).removeprefix("Value error, ")
    if kind in (SECRET_VALUE_ERROR, SECTION_ERROR):
        return message
    if "input" in detail and kind not in ("hyperparameter_type",) and not kind.endswith("_type"):
        return f"{message} (got {detail['input']!r})"
    if kind.endswith("_type"):
        return f"{message} (got {type(detail['input']).__name__} {detail['input']!r})"
    return message


def _unknown_key_message(loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    allowed = _allowed_keys(loc[:-1], root)
    key = str(loc[-1])
    if not allowed:
        return f"unknown key {key!r}"
    hint = did_you_mean(key, allowed)
    return f"unknown key {key!r}; {hint}allowed keys here: {', '.join(sorted(allowed))}"


def _allowed_keys(parent_loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The field names of the section at `parent_loc`, found by walking the schema's types
    (a user-named key, such as a pool's name, stands for the value type of its mapping)."""
    if root is ExperimentConfig and parent_loc[:1] == ("hyperparameters",):
        return ["type", "min", "max", "vals", "count"] if len(parent_loc) == 2 else []
    annotation: Any = root
    for part in parent_loc:
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            continue
        model = _model_in(annotation)
        if model is None or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
    model = _model_in(annotation)
    return list(model.model_fields) if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None` or `Annotated[X, ...]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None
