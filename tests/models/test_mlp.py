"""MLP baseline: shape, masking, empty jets, options.

Shape legend: B batch, C channels, P particle slots, K classes.
"""

import pytest
import torch

from trainyard.errors import ModelError
from trainyard.models import build_mlp


def test_logits_shape_and_backward() -> None:
    model = build_mlp(5, 3, hidden_dim=16, num_layers=3, dropout=0.2).train()
    features_BCP = torch.randn(4, 5, 10)
    mask_B1P = (torch.rand(4, 1, 10) > 0.3).float()
    logits_BK = model(torch.randn(4, 2, 10), features_BCP, mask_B1P)
    assert logits_BK.shape == (4, 3)
    logits_BK.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_padded_slots_and_points_are_ignored() -> None:
    model = build_mlp(5, 2).eval()
    features_BCP = torch.randn(3, 5, 10)
    mask_B1P = torch.ones(3, 1, 10)
    mask_B1P[:, :, 6:] = 0
    noisy_BCP = features_BCP.clone()
    noisy_BCP[:, :, 6:] = 100.0
    with torch.no_grad():
        clean_BK = model(torch.zeros(3, 2, 10), features_BCP, mask_B1P)
        noisy_BK = model(torch.randn(3, 2, 10), noisy_BCP, mask_B1P)
    assert torch.equal(clean_BK, noisy_BK)


def test_jet_without_particles_gives_finite_logits() -> None:
    model = build_mlp(5, 2).eval()
    with torch.no_grad():
        logits_BK = model(torch.zeros(2, 2, 4), torch.randn(2, 5, 4), torch.zeros(2, 1, 4))
    assert torch.isfinite(logits_BK).all()


def test_mask_shape_mismatch_is_explained() -> None:
    model = build_mlp(5, 2)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, 1, particles\)"):
        model(torch.zeros(2, 2, 4), torch.randn(2, 5, 4), torch.ones(2, 4))


@pytest.mark.parametrize("options", [{"hidden_dim": 0}, {"num_layers": -1}, {"dropout": -0.1}])
def test_bad_option_values_are_named(options: dict[str, object]) -> None:
    (option,) = options
    with pytest.raises(ModelError, match=f"'{option}'"):
        build_mlp(5, 2, **options)  # type: ignore[arg-type]
