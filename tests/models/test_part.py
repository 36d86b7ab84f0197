"""Particle Transformer: parameter count, state_dict and outputs against weaver-core's.

Shape legend: B batch, C features, P particle slots, K classes.
"""

import pytest
import torch
from torch import nn
from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

from tests.models.batchnorms import randomise_batchnorms
from trainyard.errors import ModelError
from trainyard.models import build_model
from trainyard.models.part import ParticleTransformer, build_particle_transformer

JETCLASS = {
    "embed_dims": (128, 512, 128),
    "pair_embed_dims": (64, 64, 64),
    "num_heads": 8,
    "num_layers": 8,
    "num_cls_layers": 2,
}
"""The paper's JetClass model: 17 features, 4-vectors, 10 classes."""
SMALL = {
    "embed_dims": (16, 32, 16),
    "pair_embed_dims": (8, 8),
    "num_heads": 2,
    "num_layers": 2,
    "num_cls_layers": 1,
}
NUM_FEATURES = 7
NUM_CLASSES = 3
SLOTS = 24
# Real particles per jet: full, typical, very few, a single one.
MULTIPLICITIES = (24, 17, 9, 3, 2, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weaver_part(
    num_features: int, num_classes: int, sizes: dict, dropout: float = 0.1
) -> nn.Module:
    rates = {"dropout": dropout, "attn_dropout": dropout, "activation_dropout": dropout}
    return WeaverParT(
        input_dim=num_features,
        num_classes=num_classes,
        pair_input_dim=4,
        fc_params=[],
        block_params=rates,
        **{
            key: list(value) if isinstance(value, tuple) else value for key, value in sizes.items()
        },
    )


def jets(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, physical Lorentz vectors (zero when padded) and the mask."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(MULTIPLICITIES)
    num_real_B11 = torch.tensor(MULTIPLICITIES).view(batch, 1, 1)
    mask_B1P = (torch.arange(SLOTS).view(1, 1, -1) < num_real_B11).float()
    features_BCP = torch.randn(batch, NUM_FEATURES, SLOTS, generator=generator) * mask_B1P
    momenta_B3P = 20 * torch.randn(batch, 3, SLOTS, generator=generator)
    mass_B1P = torch.rand(batch, 1, SLOTS, generator=generator)
    energy_B1P = (momenta_B3P.square().sum(dim=1, keepdim=True) + mass_B1P**2).sqrt()
    vectors_B4P = torch.cat((momenta_B3P, energy_B1P), dim=1) * mask_B1P
    return features_BCP, vectors_B4P, mask_B1P


def paired(sizes: dict, dropout: float = 0.1) -> tuple[nn.Module, ParticleTransformer]:
    torch.manual_seed(2202)
    reference = weaver_part(NUM_FEATURES, NUM_CLASSES, sizes, dropout)
    randomise_batchnorms(reference, seed=3772)
    ours = build_particle_transformer(NUM_FEATURES, NUM_CLASSES, dropout=dropout, **sizes)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def test_jetclass_setting_has_weavers_parameter_count() -> None:
    ours = build_particle_transformer(17, 10, **JETCLASS)
    reference = weaver_part(17, 10, JETCLASS)
    assert count_parameters(ours) == count_parameters(reference)
    assert 2_000_000 < count_parameters(ours) < 2_200_000
    assert count_parameters(build_particle_transformer(17, 10)) == count_parameters(ours)


def test_weavers_state_dict_loads_strictly_with_the_same_names_and_shapes() -> None:
    reference, ours = paired(SMALL)
    theirs = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert {name: tuple(t.shape) for name, t in ours.state_dict().items()} == theirs


def test_eval_outputs_equal_weavers_with_padding_and_few_particles() -> None:
    reference, ours = paired(SMALL)
    reference.eval()
    ours.eval()
    features, vectors, mask = jets()
    with torch.no_grad():
        expected = reference(features, v=vectors, mask=mask)
        found = ours(features, vectors, mask)
    assert found.shape == (len(MULTIPLICITIES), NUM_CLASSES)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)


def test_eval_outputs_equal_weavers_at_the_jetclass_size() -> None:
    reference, ours = paired(JETCLASS)
    reference.eval()
    ours.eval()
    features, vectors, mask = jets(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(features, vectors, mask),
            reference(features, v=vectors, mask=mask),
            rtol=1e-4,
            atol=1e-5,
        )


def test_training_forward_and_gradients_equal_weavers_without_dropout() -> None:
    """BatchNorm statistics over the real pairs and the gradients match in training mode."""
    reference, ours = paired(SMALL, dropout=0.0)
    features, vectors, mask = jets(seed=2)
    expected = reference(features, v=vectors, mask=mask)
    found = ours(features, vectors, mask)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)
    expected.square().sum().backward()
    found.square().sum().backward()
    theirs = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        assert theirs[name].grad is not None, name
        torch.testing.assert_close(
            parameter.grad, theirs[name].grad, rtol=1e-4, atol=1e-5, msg=name
        )
    for name, buffer in ours.named_buffers():
        torch.testing.assert_close(buffer, dict(reference.named_buffers())[name], msg=name)


def test_padded_slots_do_not_change_the_output() -> None:
    _, ours = paired(SMALL)
    ours.eval()
    features, vectors, mask = jets(seed=3)
    noise = torch.randn_like(features) * (1 - mask)
    with torch.no_grad():
        plain = ours(features, vectors, mask)
        noisy = ours(features + noise, vectors + 5 * (1 - mask), mask)
        wider = ours(*(nn.functional.pad(t, (0, 8)) for t in (features, vectors, mask)))
    torch.testing.assert_close(noisy, plain)
    torch.testing.assert_close(wider, plain)


def test_zoo_builds_it_with_options_and_refuses_bad_ones() -> None:
    model = build_model(
        "particle-transformer", num_features=NUM_FEATURES, num_classes=2, options=SMALL
    )
    assert isinstance(model, ParticleTransformer)
    with pytest.raises(
        ModelError, match=r"embed_dims\[-1\] = 16 must be a multiple of num_heads = 3"
    ):
        build_particle_transformer(NUM_FEATURES, 2, embed_dims=(16,), num_heads=3)
    with pytest.raises(
        ModelError, match=r"option 'fc_params' must be a list of \[width, dropout\]"
    ):
        build_particle_transformer(NUM_FEATURES, 2, fc_params=[64])


def test_wrong_vectors_shape_is_named() -> None:
    _, ours = paired(SMALL)
    features, vectors, mask = jets()
    with pytest.raises(ValueError, match=r"vectors must have shape \(batch, 4, particles\)"):
        ours(features, vectors[:, :3], mask)
