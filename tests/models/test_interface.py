"""The model interface check: zoo models pass, and each way a user model breaks the contract
gets a message that names the model, the shapes and the fix."""

from __future__ import annotations

import re

import pytest
import torch

from trainyard.errors import ModelError
from trainyard.models import build_model, check_model_interface, input_roles, known_models

USER_MODELS = "tests.models.user_models"
SIZES = {"num_point_channels": 2, "num_features": 7, "num_particles": 16}


def _check(name: str, num_classes: int = 2, **options: object) -> torch.nn.Module:
    model = build_model(name, num_features=7, num_classes=num_classes, options=options)
    roles = input_roles(name)
    check_model_interface(model, name=name, num_classes=num_classes, roles=roles, **SIZES)
    return model


def _message(name: str, num_classes: int = 2) -> str:
    with pytest.raises(ModelError) as caught:
        _check(name, num_classes)
    return str(caught.value)


@pytest.mark.parametrize("name", known_models())
@pytest.mark.parametrize("num_classes", [2, 5])
def test_zoo_models_pass(name: str, num_classes: int) -> None:
    options = {
        "particlenet": {"k": 4},
        "particlenet-lite": {"k": 4},
        "particle-transformer": {"embed_dims": [8], "pair_embed_dims": [4], "num_heads": 2},
    }.get(name, {})
    _check(name, num_classes, **options)


def test_a_user_model_passes_and_is_left_as_it_was() -> None:
    model = build_model(f"{USER_MODELS}:good", num_features=7, num_classes=3)
    model.train()
    model.norm.eval()  # a frozen BatchNorm stays frozen
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    check_model_interface(model, name="good", num_classes=3, **SIZES)
    assert torch.equal(torch.get_rng_state(), rng_before), "the check drew random numbers"
    assert model.training and model.dropout.training and not model.norm.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"


def test_one_score_per_jet_is_refused_with_the_expected_shape() -> None:
    message = _message(f"{USER_MODELS}:one_score")
    assert (
        f"model '{USER_MODELS}:one_score' returned shape (3,) for a batch of 3 jets, but must "
        "return logits of shape (B, num_classes) = (3, 2): unnormalised class scores, "
        "no softmax" in message
    )
    assert "give the last layer 2 outputs (e.g. nn.Linear(width, num_classes)" in message
    assert "two classes need two logits, not one sigmoid score" in message
    assert "docs/models.md" in message


def test_three_outputs_for_two_classes_is_refused() -> None:
    message = _message(f"{USER_MODELS}:three_classes")
    assert f"model '{USER_MODELS}:three_classes' returned shape (3, 3) for a batch of 3 jets" in (
        message
    )
    assert "(B, num_classes) = (3, 2)" in message
    assert "it gives 3 classes but the data has 2: build the last layer with the num_classes" in (
        message
    )


def test_a_forward_with_two_parameters_is_refused() -> None:
    message = _message(f"{USER_MODELS}:two_inputs")
    assert (
        f"model '{USER_MODELS}:two_inputs': its forward(features, mask) cannot be called as "
        "forward(points, features, mask)" in message
    )
    assert "define `def forward(self, points, features, mask)`" in message


def test_a_forward_that_raises_shows_the_shapes_and_the_user_traceback() -> None:
    message = _message(f"{USER_MODELS}:wrong_feature_count")
    assert (
        f"model '{USER_MODELS}:wrong_feature_count' failed on a test batch of 3 jets with "
        "points (3, 2, 16), features (3, 7, 16) and mask (3, 1, 16) (B, C, P)" in message
    )
    assert "user_models.py" in message and "return self.head(features.mean(dim=-1))" in message
    assert re.search(r"mat1 and mat2 shapes cannot be multiplied", message)
    assert "interface.py" not in message, "the check's own frames are hidden"


def test_returning_a_tuple_is_refused() -> None:
    message = _message(f"{USER_MODELS}:logits_and_embedding", num_classes=4)
    assert (
        f"model '{USER_MODELS}:logits_and_embedding' returned a tuple for a batch of 5 jets, "
        "but must return one tensor: logits of shape (B, num_classes) = (5, 4)" in message
    )


def test_integer_class_indices_are_refused() -> None:
    class Argmax(torch.nn.Module):
        def forward(self, points, features, mask):
            return torch.zeros(features.shape[0], 2, dtype=torch.int64)

    with pytest.raises(ModelError, match=r"model 'argmax' returned a torch.int64 tensor; logits"):
        check_model_interface(Argmax(), name="argmax", num_classes=2, **SIZES)


def test_a_model_is_fed_the_roles_it_declares_and_the_message_lists_them() -> None:
    model = build_model("particle-transformer", num_features=5, num_classes=2)
    with pytest.raises(ModelError) as caught:
        check_model_interface(
            model, name="part", num_classes=2, roles=input_roles("particle-transformer"), **SIZES
        )
    message = str(caught.value)
    assert (
        "model 'part' failed on a test batch of 3 jets with features (3, 7, 16), vectors "
        "(3, 4, 16) and mask (3, 1, 16) (B, C, P); its forward(features, vectors, mask) must "
        "accept these shapes"
    ) in message
    with pytest.raises(ModelError, match=r"cannot be called as forward\(features, mask\)"):
        check_model_interface(
            build_model(f"{USER_MODELS}:good", num_features=7, num_classes=2),
            name="good",
            num_classes=2,
            roles=input_roles("pfn"),
            **SIZES,
        )
