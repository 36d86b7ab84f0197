"""Particle Flow Network: the paper's sizes, and padded slots that change nothing."""

import pytest
import torch
from torch import nn

from trainyard.errors import ModelError
from trainyard.models import build_model
from trainyard.models.pfn import ParticleFlowNetwork, build_pfn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_sizes_are_the_papers() -> None:
    model = build_pfn(7, 2)
    widths = [layer.out_channels for layer in model.phi if isinstance(layer, nn.Conv1d)]
    assert widths == [100, 100, 256]
    assert [layer.out_features for layer in model.f if isinstance(layer, nn.Linear)] == [
        100,
        100,
        100,
        2,
    ]
    phi = (7 * 100 + 100) + (100 * 100 + 100) + (100 * 256 + 256)
    f = (256 * 100 + 100) + 2 * (100 * 100 + 100) + (100 * 2 + 2)
    assert count_parameters(model) == phi + f == 82_858


def test_padded_slots_do_not_change_the_output() -> None:
    torch.manual_seed(0)
    model = build_pfn(5, 3, phi_sizes=(16, 32), f_sizes=(16,)).eval()
    features = torch.randn(4, 5, 10)
    mask = (torch.arange(10).view(1, 1, -1) < torch.tensor([10, 6, 2, 1]).view(4, 1, 1)).float()
    with torch.no_grad():
        plain = model(features * mask, mask)
        noisy = model(features * mask + 7 * torch.randn_like(features) * (1 - mask), mask)
        wider = model(nn.functional.pad(features * mask, (0, 5)), nn.functional.pad(mask, (0, 5)))
    torch.testing.assert_close(noisy, plain)
    torch.testing.assert_close(wider, plain)
    assert plain.shape == (4, 3)


def test_zoo_builds_it_and_refuses_bad_sizes() -> None:
    model = build_model("pfn", num_features=7, num_classes=2, options={"phi_sizes": [8, 8]})
    assert isinstance(model, ParticleFlowNetwork)
    with pytest.raises(ModelError, match=r"pfn: option 'phi_sizes' must be a non-empty list"):
        build_pfn(7, 2, phi_sizes=[])
