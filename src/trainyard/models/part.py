"""Particle Transformer (ParT, arXiv:2202.03772): attention over particles, biased by pairs.

Each particle's features are embedded by LayerNorm/Linear/GELU layers; the pair features of
its Lorentz vector with every other particle's (``part_pairs``) become an additive bias on the
attention logits of each head; particle attention blocks update the particles, and class
attention blocks gather them into a class token that a linear layer classifies
(``part_blocks``). The forward takes (features, vectors, mask): ``PARTICLE_TRANSFORMER_ROLES``.

Written from the paper for trainyard. Module and parameter names follow weaver-core's
ParticleTransformer (version 1, pair input type "pp") so its state_dict loads with
strict=True, and eval outputs equal its outputs up to float rounding (tests/models/test_part.py).
Slots after the last real particle of the batch are cut off before the blocks, as weaver's
eval does; weaver's training-time random shuffle and trimming of the longest jets is not done.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    C  features per particle
    P  particle slots per jet, padded
    E  embedding width
    H  attention heads
    K  classes
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from trainyard.data.batch import NUM_VECTOR_COMPONENTS, InputRole, InputRoles
from trainyard.errors import ModelError
from trainyard.models._checks import dropout_rate, int_list, positive_int
from trainyard.models._masking import real_particles
from trainyard.models.part_blocks import Block
from trainyard.models.part_pairs import PairEmbed

PARTICLE_TRANSFORMER_ROLES = InputRoles((InputRole.FEATURES, InputRole.VECTORS, InputRole.MASK))
_NAME = "particle-transformer"


class Embed(nn.Module):
    """BatchNorm of the raw features, then LayerNorm -> Linear -> GELU per width."""

    def __init__(self, num_features: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm1d(num_features)
        layers: list[nn.Module] = []
        width = num_features
        for out in widths:
            layers += [nn.LayerNorm(width), nn.Linear(width, out), nn.GELU()]
            width = out
        self.embed = nn.Sequential(*layers)

    def forward(self, features_BCP: torch.Tensor) -> torch.Tensor:
        return self.embed(self.input_bn(features_BCP).transpose(1, 2))


class ParticleTransformer(nn.Module):
    """ParT classifier: forward(features (B, C, P), vectors (B, 4, P), mask (B, 1, P))."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        *,
        embed_dims: tuple[int, ...],
        pair_embed_dims: tuple[int, ...],
        num_heads: int,
        num_layers: int,
        num_cls_layers: int,
        fc_params: tuple[tuple[int, float], ...],
        dropout: float,
    ) -> None:
        super().__init__()
        width = embed_dims[-1]
        self.embed = Embed(num_features, embed_dims)
        self.pair_embed = PairEmbed(pair_embed_dims, num_heads)
        self.blocks = nn.ModuleList(Block(width, num_heads, dropout) for _ in range(num_layers))
        # Class attention blocks run without dropout, as in CaiT and weaver.
        self.cls_blocks = nn.ModuleList(
            Block(width, num_heads, 0.0) for _ in range(num_cls_layers)
        )
        self.norm = nn.LayerNorm(width)
        head: list[nn.Module] = []
        for out, rate in fc_params:
            head.append(nn.Sequential(nn.Linear(width, out), nn.ReLU(), nn.Dropout(rate)))
            width = out
        head.append(nn.Linear(width, num_classes))
        self.fc = nn.Sequential(*head)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
        self._init_weights()

    def forward(
        self,
        features_BCP: torch.Tensor,
        vectors_B4P: torch.Tensor,
        mask_B1P: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, K)."""
        real_B1P = real_particles(features_BCP, mask_B1P)
        if vectors_B4P.shape != (len(features_BCP), NUM_VECTOR_COMPONENTS, real_B1P.shape[-1]):
            raise ValueError(
                f"vectors must have shape (batch, 4, particles) = ({len(features_BCP)}, 4, "
                f"{real_B1P.shape[-1]}): px, py, pz, energy per particle; got "
                f"{tuple(vectors_B4P.shape)}"
            )
        used = _used_slots(real_B1P)
        real_BP = real_B1P[:, 0, :used]
        x_BPE = self.embed(features_BCP[..., :used]).masked_fill(~real_BP.unsqueeze(-1), 0)
        key_bias_B11P = torch.zeros_like(x_BPE[:, None, None, :, 0]).masked_fill(
            ~real_BP[:, None, None], float("-inf")
        )
        pair_bias_BHPP = self.pair_embed(vectors_B4P[..., :used].float(), real_BP)
        bias_BHPP = pair_bias_BHPP.to(x_BPE.dtype) + key_bias_B11P
        for block in self.blocks:
            x_BPE = block(x_BPE, bias_BHPP)
        cls_bias_B11P = nn.functional.pad(key_bias_B11P, (1, 0))
        # size(0), not len(): an ONNX export traces it as the batch axis, not a number.
        cls_B1E = self.cls_token.expand(x_BPE.size(0), -1, -1)
        for block in self.cls_blocks:
            cls_B1E = block(x_BPE, cls_bias_B11P, x_cls_B1E=cls_B1E)
        return self.fc(self.norm(cls_B1E.squeeze(1)))

    def _init_weights(self) -> None:
        """Xavier-uniform linear layers (q, k, v each as its own matrix), zero biases, a small
        class token, and each block's output projections scaled down with depth (MoCo v3's
        ViT recipe, as the paper trains with)."""
        for name, module in self.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            if name.endswith("in_proj"):
                fan_out, fan_in = module.weight.shape
                bound = math.sqrt(6.0 / (fan_out // 3 + fan_in))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        with torch.no_grad():
            for depth, block in enumerate(self.blocks, start=1):
                block.attn.out_proj.weight.div_(math.sqrt(2.0 * depth))
                block.fc2.weight.div_(math.sqrt(2.0 * depth))


def _used_slots(real_B1P: torch.Tensor) -> int | torch.Tensor:
    """Slots up to the batch's last real particle: those after it change nothing, so training
    and evaluation cut them off. An ONNX export keeps every slot, since the cut would be traced
    as a constant of the example batch."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return real_B1P.size(-1)
    live_slots = real_B1P.any(dim=0).flatten().nonzero()
    return int(live_slots.max()) + 1 if len(live_slots) else 1


def build_particle_transformer(
    num_features: int,
    num_classes: int,
    *,
    embed_dims: Sequence[int] = (128, 512, 128),
    pair_embed_dims: Sequence[int] = (64, 64, 64),
    num_heads: int = 8,
    num_layers: int = 8,
    num_cls_layers: int = 2,
    fc_params: Sequence[Sequence[float]] = (),
    dropout: float = 0.1,
) -> ParticleTransformer:
    """ParT with the paper's sizes by default (about 2.1M parameters for JetClass).

    embed_dims: widths of the particle embedding; the last is the attention width.
    pair_embed_dims: widths of the pair embedding before its last layer (one per head).
    num_layers, num_cls_layers: particle and class attention blocks.
    fc_params: [width, dropout] of each hidden layer of the head (default: none).
    dropout: of the particle blocks' attention, outputs and feed-forward.
    """
    embed = int_list(_NAME, "embed_dims", embed_dims)
    heads = positive_int(_NAME, "num_heads", num_heads)
    if embed[-1] % heads:
        raise ModelError(
            f"{_NAME}: the attention width embed_dims[-1] = {embed[-1]} must be a multiple of "
            f"num_heads = {heads}; change one of them"
        )
    return ParticleTransformer(
        num_features,
        num_classes,
        embed_dims=embed,
        pair_embed_dims=int_list(_NAME, "pair_embed_dims", pair_embed_dims, allow_empty=True),
        num_heads=heads,
        num_layers=positive_int(_NAME, "num_layers", num_layers),
        num_cls_layers=positive_int(_NAME, "num_cls_layers", num_cls_layers),
        fc_params=_fc_params(fc_params),
        dropout=dropout_rate(_NAME, "dropout", dropout),
    )


def _fc_params(value: object) -> tuple[tuple[int, float], ...]:
    problem = (
        f"{_NAME}: option 'fc_params' must be a list of [width, dropout] pairs, e.g. "
        f"[[128, 0.1]], got {value!r}"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ModelError(problem)
    layers = []
    for layer in value:
        if isinstance(layer, str | bytes) or not isinstance(layer, Sequence) or len(layer) != 2:
            raise ModelError(problem)
        layers.append(
            (
                positive_int(_NAME, "fc_params width", layer[0]),
                dropout_rate(_NAME, "fc_params dropout", layer[1]),
            )
        )
    return tuple(layers)
