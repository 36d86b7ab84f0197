"""Non-trivial BatchNorm statistics for parity tests against weaver-core."""

import torch
from torch import nn


def randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics so eval-mode parity tests them too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
