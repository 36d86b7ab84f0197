"""Find a model by name and build it: the zoo, a user's "package.module:callable", or a weaver
network file "path/to/network.py".

Every failure a user can cause (typo, import error in their file, missing attribute, wrong
option) becomes a ModelError that says what to fix, because the CLI shows no traceback.
"""

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from trainyard.data.batch import DEFAULT_INPUT_ROLES, InputRoles
from trainyard.data.weaver.network_config import NetworkDataConfig
from trainyard.errors import ModelError, TrainyardError
from trainyard.models._checks import positive_int
from trainyard.models._tracebacks import user_traceback
from trainyard.models.mlp import build_mlp
from trainyard.models.network_file import build_network, build_network_loss, is_network_file
from trainyard.models.part import PARTICLE_TRANSFORMER_ROLES, build_particle_transformer
from trainyard.models.particlenet import build_particlenet, build_particlenet_lite
from trainyard.models.pfn import PFN_ROLES, build_pfn
from trainyard.suggest import did_you_mean


@dataclass(frozen=True)
class ZooModel:
    """A zoo model: how to build it, and which inputs its forward takes."""

    builder: Callable[..., nn.Module]
    """builder(num_features, num_classes, *, options): the keyword-only parameters are the
    model's options."""
    roles: InputRoles = DEFAULT_INPUT_ROLES


_ZOO: dict[str, ZooModel] = {
    "particlenet": ZooModel(build_particlenet),
    "particlenet-lite": ZooModel(build_particlenet_lite),
    "mlp": ZooModel(build_mlp),
    "particle-transformer": ZooModel(build_particle_transformer, PARTICLE_TRANSFORMER_ROLES),
    "pfn": ZooModel(build_pfn, PFN_ROLES),
}

_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

# Frames of the import machinery and of this module, hidden from user-facing tracebacks.
_MACHINERY_FILES = frozenset({__file__, importlib.__file__})


def known_models() -> list[str]:
    """Names of the zoo models, sorted."""
    return sorted(_ZOO)


def accepted_options(name: str) -> frozenset[str] | None:
    """Option names a zoo model accepts; None for a user entry point or network file, which
    takes its own."""
    if is_network_file(name):
        if not Path(name).is_file():
            raise ModelError(
                f"network file {name} does not exist; give `model` the path of a weaver "
                "network file (relative paths start at the folder trainyard runs in), or a zoo "
                f"model: {', '.join(known_models())}"
            )
        return None
    if _is_entry_point(name):
        _split_entry_point(name)
        return None
    return _zoo_options(_zoo_model(name).builder)


def input_roles(name: str) -> InputRoles | None:
    """The inputs model ``name`` takes, in order; a user entry point takes the default
    (points, features, mask), a network file (None) every input group of its data config.
    Known before the model is built, so the data can be staged."""
    if is_network_file(name):
        return None
    if _is_entry_point(name):
        return DEFAULT_INPUT_ROLES
    return _zoo_model(name).roles


def build_model(
    name: str,
    *,
    num_features: int,
    num_classes: int,
    options: Mapping[str, Any] | None = None,
    data_config: NetworkDataConfig | None = None,
) -> nn.Module:
    """Build a zoo model or call a user entry point with the sizes and options; a network
    file's get_model reads its sizes from ``data_config`` instead."""
    if is_network_file(name):
        return build_network(name, _network_config(name, data_config), options or {})
    num_features = positive_int(name, "num_features", num_features)
    num_classes = positive_int(name, "num_classes", num_classes)
    options = dict(options or {})
    if _is_entry_point(name):
        return _build_from_entry_point(name, num_features, num_classes, options)
    builder = _zoo_model(name).builder
    allowed = _zoo_options(builder)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ModelError(
            f"model '{name}' has no option(s) {', '.join(repr(o) for o in unknown)}; "
            f"it accepts: {', '.join(sorted(allowed))}"
        )
    return builder(num_features, num_classes, **options)


def build_loss(
    name: str,
    *,
    options: Mapping[str, Any] | None = None,
    data_config: NetworkDataConfig | None = None,
) -> nn.Module | None:
    """The loss a network file's get_loss builds; None (cross entropy) for every other model."""
    if not is_network_file(name):
        return None
    return build_network_loss(name, _network_config(name, data_config), options or {})


def _network_config(name: str, data_config: NetworkDataConfig | None) -> NetworkDataConfig:
    assert data_config is not None, f"network file {name} is built with its data config"
    return data_config


def _is_entry_point(name: str) -> bool:
    return ":" in name


def _zoo_model(name: str) -> ZooModel:
    found = _ZOO.get(name)
    if found is not None:
        return found
    message = f"unknown model '{name}'; known models: {', '.join(known_models())}"
    message += did_you_mean(name, known_models(), before=". ", after="", sentence=True)
    message += " (for your own model give 'package.module:callable')"
    raise ModelError(message)


def _zoo_options(builder: Callable[..., nn.Module]) -> frozenset[str]:
    """The keyword-only parameters of a builder are its options; one source of truth."""
    parameters = inspect.signature(builder).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _split_entry_point(entry_point: str) -> tuple[str, str]:
    module_name, _, attribute = entry_point.partition(":")
    if not (_DOTTED_NAME.fullmatch(module_name) and _DOTTED_NAME.fullmatch(attribute)):
        raise ModelError(
            f"malformed model entry point '{entry_point}'; expected 'package.module:callable' "
            "with one ':' between an importable module and a name in it, "
            "e.g. 'mytaggers.models:build_tagger'"
        )
    return module_name, attribute


def _build_from_entry_point(
    entry_point: str, num_features: int, num_classes: int, options: dict[str, Any]
) -> nn.Module:
    module_name, attribute = _split_entry_point(entry_point)
    factory = _resolve(entry_point, _import(entry_point, module_name), attribute)
    try:
        model = factory(num_features=num_features, num_classes=num_classes, **options)
    except TrainyardError:
        raise
    except Exception as error:
        raise ModelError(
            f"model entry point '{entry_point}' failed while building the model "
            f"(called with num_features={num_features}, num_classes={num_classes}, "
            f"options={options!r}):\n{user_traceback(error, hidden_files=_MACHINERY_FILES)}"
        ) from error
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model entry point '{entry_point}' must return a torch.nn.Module, "
            f"but returned {type(model).__qualname__}: {_short_repr(model)}"
        )
    return model


def _import(entry_point: str, module_name: str) -> ModuleType:
    # A long-lived process may see user files created after it started.
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and _is_same_or_parent(error.name, module_name):
            raise ModelError(
                f"model entry point '{entry_point}': no module named '{error.name}' on the "
                "Python path; check the spelling, or add the folder that holds it to "
                "PYTHONPATH"
            ) from error
        raise _import_failure(entry_point, module_name, error) from error
    except Exception as error:
        raise _import_failure(entry_point, module_name, error) from error


def _import_failure(entry_point: str, module_name: str, error: BaseException) -> ModelError:
    return ModelError(
        f"model entry point '{entry_point}': importing module '{module_name}' failed:\n"
        f"{user_traceback(error, hidden_files=_MACHINERY_FILES)}"
    )


def _is_same_or_parent(missing: str, module_name: str) -> bool:
    return module_name == missing or module_name.startswith(missing + ".")


def _resolve(entry_point: str, module: ModuleType, attribute: str) -> Callable[..., Any]:
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(
                name
                for name, value in vars(module).items()
                if not name.startswith("_") and callable(value)
            )
            listing = ", ".join(public) if public else "(none)"
            raise ModelError(
                f"model entry point '{entry_point}': module '{module.__name__}' has no "
                f"attribute '{attribute}'; its public callables are: {listing}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(
            f"model entry point '{entry_point}' names a {type(target).__qualname__}, "
            "not a callable that builds the model"
        )
    return target


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
