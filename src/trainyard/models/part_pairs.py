"""Particle Transformer's pairwise interaction features and their embedding into attention biases.

For every pair (i, j) of real particles of a jet, four features of their Lorentz vectors
(arXiv:2202.03772, eq. 3), with pt, rapidity y and azimuth phi of each particle:

    ln kT      ln(min(pt_i, pt_j) * Delta)
    ln z       ln(min(pt_i, pt_j) / (pt_i + pt_j))
    ln Delta   Delta = sqrt((y_i - y_j)^2 + (phi_i - phi_j)^2), phi difference wrapped to [-pi, pi)
    ln m^2     m^2 = (E_i + E_j)^2 - |p_i + p_j|^2

Each argument is clamped at EPS before the log (collinear, identical or massless pairs). The
features are symmetric in (i, j), so only the pairs i >= j of real particles are computed and
embedded (weaver-core's sparse path): padded pairs never enter the BatchNorm statistics. The
embedding is a stack of 1x1 convolutions with BatchNorm and GELU whose last layer has one
channel per attention head and no activation; its output is an additive bias on the
attention logits of each head, zero for pairs with a padded particle (masked anyway).

Written from the paper for trainyard; module names follow weaver-core's PairEmbed so its
state_dict loads with strict=True.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    P  particle slots per jet, padded
    N  real pairs (i >= j) of the batch, flattened
    H  attention heads
    F  pair features (4) or embedding channels
"""

from __future__ import annotations

import math

import torch
from torch import nn

NUM_PAIR_FEATURES = 4
EPS = 1e-8


def pair_features(vectors_i_4N: torch.Tensor, vectors_j_4N: torch.Tensor) -> torch.Tensor:
    """(ln kT, ln z, ln Delta, ln m^2) of each pair, (4, N), from (px, py, pz, E) of both."""
    pt_i, rapidity_i, phi_i = _pt_rapidity_phi(vectors_i_4N)
    pt_j, rapidity_j, phi_j = _pt_rapidity_phi(vectors_j_4N)
    delta_phi = (phi_i - phi_j + math.pi) % (2 * math.pi) - math.pi
    delta = ((rapidity_i - rapidity_j) ** 2 + delta_phi**2).sqrt()
    pt_min = torch.minimum(pt_i, pt_j)
    ln_kt = torch.log((pt_min * delta).clamp(min=EPS))
    ln_z = torch.log((pt_min / (pt_i + pt_j).clamp(min=EPS)).clamp(min=EPS))
    ln_delta = torch.log(delta.clamp(min=EPS))
    summed_4N = vectors_i_4N + vectors_j_4N
    mass2 = summed_4N[3] ** 2 - summed_4N[:3].square().sum(dim=0)
    ln_m2 = torch.log(mass2.clamp(min=EPS))
    return torch.stack((ln_kt, ln_z, ln_delta, ln_m2))


def _pt_rapidity_phi(vectors_4N: torch.Tensor) -> tuple[torch.Tensor, ...]:
    px, py, pz, energy = vectors_4N.unbind(0)
    pt = (px**2 + py**2).sqrt()
    # y = 0.5 ln((E + pz) / (E - pz)), written so that E = pz gives a finite number.
    rapidity = 0.5 * torch.log(1 + 2 * pz / (energy - pz).clamp(min=1e-20))
    return pt, rapidity, torch.atan2(py, px)


class PairEmbed(nn.Module):
    """Pair features of the real pairs -> per-head attention biases (B, H, P, P)."""

    def __init__(self, widths: tuple[int, ...], num_heads: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(NUM_PAIR_FEATURES)]
        width = NUM_PAIR_FEATURES
        for out in (*widths, num_heads):
            layers += [nn.Conv1d(width, out, 1), nn.BatchNorm1d(out), nn.GELU()]
            width = out
        # The last layer's output is a logit bias: no activation after it.
        self.embed = nn.Sequential(*layers[:-1])
        self.num_heads = num_heads

    def forward(self, vectors_B4P: torch.Tensor, real_BP: torch.Tensor) -> torch.Tensor:
        batch, _, slots = vectors_B4P.shape
        pairs_BPP = real_BP.unsqueeze(2) & real_BP.unsqueeze(1)
        jet_N, i_N, j_N = pairs_BPP.tril().nonzero(as_tuple=True)
        vectors_BP4 = vectors_B4P.transpose(1, 2)
        features_4N = pair_features(vectors_BP4[jet_N, i_N].T, vectors_BP4[jet_N, j_N].T)
        bias_HN = self.embed(features_4N.unsqueeze(0)).squeeze(0)
        bias_BPPH = bias_HN.new_zeros(batch, slots, slots, self.num_heads)
        bias_BPPH[jet_N, i_N, j_N] = bias_HN.T
        bias_BPPH[jet_N, j_N, i_N] = bias_HN.T
        return bias_BPPH.permute(0, 3, 1, 2)
