"""weaver-core network files run unchanged: get_model(data_config, **options) builds the model
from a data-config object with weaver's attributes, get_loss gives the loss, and each way a file
can be wrong gets a message naming the file (and the line, for an error raised in it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from weaver.nn.model.ParticleNet import ParticleNet
from weaver.nn.model.ParticleTransformer import ParticleTransformer
from weaver.utils.data.config import DataConfig

from trainyard.data.batch import InputGroups
from trainyard.data.weaver.network_config import NetworkDataConfig
from trainyard.data.weaver.parser import load_weaver_config
from trainyard.errors import ModelError
from trainyard.models import (
    accepted_options,
    build_loss,
    build_model,
    check_model_interface,
    input_roles,
)

REPO = Path(__file__).parents[2]
TOP_KIN = REPO / "examples" / "configs" / "top-kin-inputs.yaml"
THREE_CLASSES = REPO / "examples" / "configs" / "toy-three-classes.yaml"
NETWORKS = REPO / "examples" / "networks"
TINY = {
    "particlenet.py": {"conv_params": [[4, [8, 8]]], "fc_params": [[16, 0.1]]},
    "particle_transformer.py": {
        "embed_dims": [16, 16],
        "pair_embed_dims": [8],
        "num_heads": 2,
        "num_layers": 1,
        "num_cls_layers": 1,
    },
    "pfn.py": {"phi_sizes": [16, 32], "f_sizes": [16]},
}


def _network_config(path: Path = TOP_KIN) -> NetworkDataConfig:
    return NetworkDataConfig.from_config(load_weaver_config(path))


def _groups(config: NetworkDataConfig, length: int = 16) -> InputGroups:
    shapes = tuple((shape[1], length) for shape in config.input_shapes.values())
    return InputGroups(names=config.input_names, shapes=shapes)


def _build(path: Path | str, **options: object) -> torch.nn.Module:
    return build_model(
        str(path), num_features=0, num_classes=0, options=options, data_config=_network_config()
    )


def _write(tmp_path: Path, source: str, name: str = "network.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.parametrize("config", [TOP_KIN, THREE_CLASSES], ids=lambda p: p.stem)
def test_the_data_config_object_has_weavers_attributes_and_values(config: Path) -> None:
    ours = _network_config(config)
    weavers = DataConfig.load(str(config), load_observers=True, load_reweight_info=False)
    for attribute in (
        "input_names",
        "input_dicts",
        "input_shapes",
        "label_value",
        "label_names",
        "observer_names",
        "monitor_variables",
        "z_variables",
        "selection",
        "test_time_selection",
    ):
        assert getattr(ours, attribute) == getattr(weavers, attribute), attribute


def _check(model: torch.nn.Module, name: str) -> None:
    config = _network_config()
    check_model_interface(
        model,
        name=name,
        num_point_channels=0,
        num_features=0,
        num_particles=0,
        num_classes=len(config.label_value),
        roles=_groups(config),
    )


def _interface_message(path: Path) -> str:
    with pytest.raises(ModelError) as caught:
        _check(_build(path), str(path))
    return str(caught.value)


@pytest.mark.parametrize("network", sorted(TINY))
def test_the_example_network_files_build_and_take_every_input_group(network: str) -> None:
    assert input_roles(str(NETWORKS / network)) is None, "a network file takes the groups"
    assert accepted_options(str(NETWORKS / network)) is None, "its options are its own"
    _check(_build(NETWORKS / network, **TINY[network]), network)


def test_network_files_build_weavers_own_modules_with_the_options_given() -> None:
    particlenet = _build(NETWORKS / "particlenet.py", **TINY["particlenet.py"])
    assert isinstance(particlenet.mod, ParticleNet)
    assert [block.k for block in particlenet.mod.edge_convs] == [4], "conv_params reached it"
    part = _build(NETWORKS / "particle_transformer.py", **TINY["particle_transformer.py"])
    assert isinstance(part.mod, ParticleTransformer)
    assert len(part.mod.blocks) == 1, "num_layers reached it"


def test_get_loss_is_built_with_the_options_and_absent_means_cross_entropy(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        """
        import torch

        def get_model(data_config, **kwargs):
            return torch.nn.Linear(1, len(data_config.label_value)), {}

        def get_loss(data_config, smoothing=0.0, **kwargs):
            return torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
        """,
    )
    loss = build_loss(str(path), options={"smoothing": 0.25}, data_config=_network_config())
    assert isinstance(loss, torch.nn.CrossEntropyLoss) and loss.label_smoothing == 0.25
    no_loss = build_loss(
        str(NETWORKS / "pfn.py"), options=TINY["pfn.py"], data_config=_network_config()
    )
    assert no_loss is None
    assert build_loss("particlenet", options={}, data_config=None) is None


def _message(path: Path | str, **options: object) -> str:
    with pytest.raises(ModelError) as caught:
        _build(path, **options)
    return str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nets" / "missing.py"
    message = _message(missing)
    assert f"network file {missing} does not exist" in message
    with pytest.raises(ModelError, match="does not exist; give `model` the path"):
        accepted_options(str(missing))


def test_a_file_without_get_model_lists_what_it_defines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        import torch

        def make_model(data_config):
            return torch.nn.Linear(1, 2)
        """,
    )
    message = _message(path)
    assert f"network file {path} has no function get_model(data_config, **kwargs)" in message
    assert "The file defines: make_model" in message


def test_get_model_that_raises_shows_the_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        def get_model(data_config, **kwargs):
            width = kwargs["width"]
            return width
        """,
    )
    message = _message(path, depth=3)
    assert f"network file {path}: get_model(data_config, **{{'depth': 3}}) failed" in message
    assert f'File "{path}", line 3, in get_model' in message
    assert "KeyError: 'width'" in message


def test_a_file_that_fails_to_import_shows_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "import torch\nfrom weaver.nn.model.NoSuchNet import NoSuchNet\n")
    message = _message(path)
    assert f"network file {path}: importing it failed" in message
    assert f'File "{path}", line 2' in message
    assert "No module named 'weaver.nn.model.NoSuchNet'" in message


def test_get_model_must_return_a_module(tmp_path: Path) -> None:
    path = _write(tmp_path, "def get_model(data_config, **kwargs):\n    return 'net', {}\n")
    message = _message(path)
    assert "get_model must return (model, model_info) with model a torch.nn.Module" in message
    assert "returned tuple whose first item is a str" in message


def test_get_loss_must_return_something_to_call(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        import torch

        def get_model(data_config, **kwargs):
            return torch.nn.Linear(1, 2), {}

        def get_loss(data_config, **kwargs):
            return "cross_entropy"
        """,
    )
    with pytest.raises(ModelError, match=r"get_loss must return the loss to train with"):
        build_loss(str(path), options={}, data_config=_network_config())


def test_a_forward_that_does_not_take_every_group_is_told_their_names(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(7, 2)

            def forward(self, features, mask):
                return self.linear((features * mask).sum(-1))

        def get_model(data_config, **kwargs):
            return Net(), {}
        """,
    )
    message = _interface_message(path)
    assert "cannot be called as forward(pf_points, pf_features, pf_vectors, pf_mask)" in message
    assert "one per input group of the data config, in its order" in message
    assert "def forward(self, pf_points, pf_features, pf_vectors, pf_mask)" in message


def test_a_group_shape_the_model_cannot_take_is_named_with_its_shape(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv1d(5, 2, 1)  # the config's pf_features has 7

            def forward(self, points, features, vectors, mask):
                return (self.conv(features) * mask).sum(-1)

        def get_model(data_config, **kwargs):
            return Net(), {}
        """,
    )
    message = _interface_message(path)
    assert "pf_features (3, 7, 16)" in message and "pf_mask (3, 1, 16)" in message
    assert f'File "{path}", line 10, in forward' in message
