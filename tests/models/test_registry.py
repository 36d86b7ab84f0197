"""Model registry: zoo lookups, user entry points and every error a user can cause."""

import re
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from torch import nn

from trainyard.data.batch import DEFAULT_INPUT_ROLES
from trainyard.errors import ModelError
from trainyard.models import (
    MLPBaseline,
    ParticleFlowNetwork,
    ParticleNet,
    ParticleTransformer,
    accepted_options,
    build_model,
    input_roles,
    known_models,
)

UserModule = Callable[[str], str]


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserModule]:
    """Write source into a uniquely named importable module and return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(source: str) -> str:
        name = f"user_models_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_known_models_lists_the_zoo() -> None:
    assert known_models() == [
        "mlp",
        "particle-transformer",
        "particlenet",
        "particlenet-lite",
        "pfn",
    ]


def test_models_declare_their_input_roles() -> None:
    assert input_roles("particlenet").call == "forward(points, features, mask)"
    assert input_roles("particle-transformer").call == "forward(features, vectors, mask)"
    assert input_roles("pfn").call == "forward(features, mask)"
    assert input_roles("mypkg.models:build") == DEFAULT_INPUT_ROLES


@pytest.mark.parametrize(
    ("name", "model_type"),
    [
        ("particlenet", ParticleNet),
        ("particlenet-lite", ParticleNet),
        ("mlp", MLPBaseline),
        ("particle-transformer", ParticleTransformer),
        ("pfn", ParticleFlowNetwork),
    ],
)
def test_zoo_models_build(name: str, model_type: type[nn.Module]) -> None:
    model = build_model(name, num_features=7, num_classes=2)
    assert isinstance(model, model_type)


def test_zoo_options_are_forwarded() -> None:
    model = build_model(
        "particlenet-lite", num_features=7, num_classes=2, options={"k": 4, "fc_dim": 32}
    )
    assert isinstance(model, ParticleNet)
    assert [block.k for block in model.edge_convs] == [4, 4]
    assert model.fc[0][0].out_features == 32


def test_accepted_options() -> None:
    particlenet_options = frozenset({"k", "conv_channels", "fc_dim", "dropout"})
    assert accepted_options("particlenet") == particlenet_options
    assert accepted_options("particlenet-lite") == particlenet_options
    assert accepted_options("mlp") == frozenset({"hidden_dim", "num_layers", "dropout"})
    assert accepted_options("somewhere.models:build") is None


def test_unknown_zoo_name_lists_models_and_suggests() -> None:
    with pytest.raises(ModelError) as caught:
        build_model("particlenet_lite", num_features=7, num_classes=2)
    message = str(caught.value)
    assert "unknown model 'particlenet_lite'" in message
    assert "known models: mlp, particle-transformer, particlenet, particlenet-lite, pfn" in message
    assert "Did you mean 'particlenet-lite'?" in message


def test_unknown_zoo_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ModelError, match="unknown model 'xgboost'") as caught:
        accepted_options("xgboost")
    assert "Did you mean" not in str(caught.value)
    with pytest.raises(ModelError, match="Did you mean 'particle-transformer'"):
        accepted_options("transformer")


def test_unknown_option_is_named_with_accepted_ones() -> None:
    with pytest.raises(ModelError) as caught:
        build_model("mlp", num_features=7, num_classes=2, options={"hidden_dims": 64})
    message = str(caught.value)
    assert "model 'mlp' has no option(s) 'hidden_dims'" in message
    assert "it accepts: dropout, hidden_dim, num_layers" in message


@pytest.mark.parametrize("entry_point", ["a:b:c", ":x", "pkg.mod:", "pkg..mod:f", "m:1f"])
def test_malformed_entry_point(entry_point: str) -> None:
    with pytest.raises(
        ModelError, match=re.escape(f"malformed model entry point '{entry_point}'")
    ):
        build_model(entry_point, num_features=7, num_classes=2)
    with pytest.raises(ModelError, match=re.escape("expected 'package.module:callable'")):
        accepted_options(entry_point)


def test_user_entry_point_builds_with_sizes_and_options(user_module: UserModule) -> None:
    module = user_module(
        """
        from torch import nn

        def build_tagger(num_features, num_classes, width=4):
            return nn.Sequential(nn.Linear(num_features, width), nn.Linear(width, num_classes))
        """
    )
    model = build_model(
        f"{module}:build_tagger", num_features=7, num_classes=3, options={"width": 5}
    )
    assert isinstance(model, nn.Sequential)
    assert (model[0].in_features, model[0].out_features, model[1].out_features) == (7, 5, 3)


def test_user_module_that_fails_to_import_shows_its_traceback(user_module: UserModule) -> None:
    module = user_module(
        """
        import math

        SCALE = math.sqrt(2)
        BROKEN = 1 / 0  # the line the user must see
        """
    )
    with pytest.raises(ModelError) as caught:
        build_model(f"{module}:build", num_features=7, num_classes=2)
    message = str(caught.value)
    assert f"model entry point '{module}:build': importing module '{module}' failed" in message
    assert f'{module}.py", line 5' in message
    assert "BROKEN = 1 / 0  # the line the user must see" in message
    assert "ZeroDivisionError: division by zero" in message
    assert "importlib" not in message


def test_user_module_with_syntax_error_shows_the_line(user_module: UserModule) -> None:
    module = user_module("def build(:\n    pass\n")
    with pytest.raises(ModelError, match="SyntaxError") as caught:
        build_model(f"{module}:build", num_features=7, num_classes=2)
    assert "def build(:" in str(caught.value)


def test_missing_user_module_is_explained() -> None:
    with pytest.raises(ModelError, match="no module named 'no_such_pkg_x1' on the Python path"):
        build_model("no_such_pkg_x1.models:build", num_features=7, num_classes=2)


def test_missing_attribute_lists_public_callables(user_module: UserModule) -> None:
    module = user_module(
        """
        from torch import nn

        LIMIT = 3

        def build_tagger(num_features, num_classes):
            return nn.Linear(num_features, num_classes)

        class Tagger(nn.Module):
            pass

        def _helper():
            pass
        """
    )
    with pytest.raises(ModelError) as caught:
        build_model(f"{module}:build_taggr", num_features=7, num_classes=2)
    message = str(caught.value)
    assert f"module '{module}' has no attribute 'build_taggr'" in message
    assert "its public callables are: Tagger, build_tagger" in message


def test_entry_point_returning_a_non_module(user_module: UserModule) -> None:
    module = user_module(
        """
        def build(num_features, num_classes):
            return {"layers": num_features}
        """
    )
    with pytest.raises(ModelError) as caught:
        build_model(f"{module}:build", num_features=7, num_classes=2)
    message = str(caught.value)
    assert f"model entry point '{module}:build' must return a torch.nn.Module" in message
    assert "but returned dict: {'layers': 7}" in message


def test_entry_point_that_raises_while_building(user_module: UserModule) -> None:
    module = user_module(
        """
        def build(num_features, num_classes, depth):
            raise RuntimeError(f"depth {depth} is too deep")
        """
    )
    with pytest.raises(ModelError) as caught:
        build_model(f"{module}:build", num_features=7, num_classes=2, options={"depth": 9})
    message = str(caught.value)
    assert f"model entry point '{module}:build' failed while building the model" in message
    assert "RuntimeError: depth 9 is too deep" in message


def test_entry_point_naming_a_non_callable(user_module: UserModule) -> None:
    module = user_module("LIMIT = 3\n")
    with pytest.raises(ModelError, match="names a int, not a callable"):
        build_model(f"{module}:LIMIT", num_features=7, num_classes=2)


def test_sizes_must_be_positive_integers() -> None:
    with pytest.raises(ModelError, match="'num_classes' must be a positive integer"):
        build_model("mlp", num_features=7, num_classes=0)
