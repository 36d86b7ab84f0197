"""weaver-core network files, run unchanged: ``model: path/to/network.py``.

Such a file defines ``get_model(data_config, **kwargs)`` returning ``(model, model_info)`` and,
optionally, ``get_loss(data_config, **kwargs)`` returning the training loss; weaver passes its
``--network-option`` values as the keyword arguments, trainyard passes ``model.options``
(and the model options a search picks). The model's forward takes every input group of the
data config, in the config's order. Every failure a user can cause becomes a ModelError that
names the file, and, for an error raised in it, its traceback down to the line.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from trainyard.data.weaver.network_config import NetworkDataConfig
from trainyard.errors import ModelError, TrainyardError
from trainyard.models._tracebacks import user_traceback

NETWORK_FILE_SUFFIX = ".py"
"""A model named by a path ending in .py is a network file (config/loader.py makes it
absolute)."""

# Frames of this module and of the import machinery, hidden from user-facing tracebacks.
_MACHINERY_FILES = frozenset({__file__, importlib.util.__file__})


def is_network_file(name: str) -> bool:
    """Whether ``model.name`` names a weaver network file rather than a zoo model."""
    return name.endswith(NETWORK_FILE_SUFFIX) and ":" not in name


def build_network(
    path: str, data_config: NetworkDataConfig, options: Mapping[str, Any]
) -> nn.Module:
    """The model of the network file at ``path``: ``get_model(data_config, **options)[0]``."""
    get_model = _function(path, "get_model", required=True)
    assert get_model is not None
    built = _call(path, get_model, data_config, options)
    model = built[0] if isinstance(built, tuple) and built else built
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"network file {path}: get_model must return (model, model_info) with model a "
            f"torch.nn.Module, as weaver-core requires, but returned "
            f"{type(built).__qualname__}{_first_of(built)}"
        )
    return model


def build_network_loss(
    path: str, data_config: NetworkDataConfig, options: Mapping[str, Any]
) -> nn.Module | None:
    """The file's ``get_loss(data_config, **options)``, or None when it defines none (the
    training loop then uses cross entropy, as weaver-core does)."""
    get_loss = _function(path, "get_loss", required=False)
    if get_loss is None:
        return None
    loss = _call(path, get_loss, data_config, options)
    if not callable(loss):
        raise ModelError(
            f"network file {path}: get_loss must return the loss to train with, called as "
            f"loss(logits, labels) (e.g. torch.nn.CrossEntropyLoss()), but returned "
            f"{type(loss).__qualname__}"
        )
    return loss


def _function(path: str, name: str, *, required: bool) -> Callable[..., Any] | None:
    module = _load(path)
    found = getattr(module, name, None)
    if found is None and not required:
        return None
    if not callable(found):
        public = sorted(
            attribute
            for attribute, value in vars(module).items()
            if not attribute.startswith("_") and callable(value) and _defined_in(value, module)
        )
        raise ModelError(
            f"network file {path} has no function {name}(data_config, **kwargs); a weaver "
            f"network file defines get_model returning (model, model_info). The file defines: "
            f"{', '.join(public) if public else '(no functions)'}"
        )
    return found


def _defined_in(value: object, module: ModuleType) -> bool:
    return getattr(value, "__module__", None) == module.__name__


def _load(path: str) -> ModuleType:
    """Import the file under a name of its own (weaver-core imports it the same way, without
    touching sys.path), so two network files with the same file name do not collide."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(
            f"network file {path} does not exist; give `model` the path of a weaver network "
            "file (relative paths start at the folder trainyard runs in), or a zoo model name"
        )
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"trainyard_network_{digest}", file)
    assert spec is not None and spec.loader is not None, "a .py file has a source loader"
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ModelError(
            f"network file {path}: importing it failed:\n"
            f"{user_traceback(error, hidden_files=_MACHINERY_FILES)}"
        ) from error
    return module


def _call(
    path: str,
    function: Callable[..., Any],
    data_config: NetworkDataConfig,
    options: Mapping[str, Any],
) -> Any:
    try:
        return function(data_config, **options)
    except TrainyardError:
        raise
    except Exception as error:
        raise ModelError(
            f"network file {path}: {function.__name__}(data_config, **{dict(options)!r}) "
            f"failed:\n{user_traceback(error, hidden_files=_MACHINERY_FILES)}"
        ) from error


def _first_of(built: object) -> str:
    if isinstance(built, tuple) and built:
        return f" whose first item is a {type(built[0]).__qualname__}"
    return ""
