"""Particle Transformer's attention blocks: particle attention and class attention.

A particle attention block (arXiv:2202.03772, fig. 3) is a pre-norm transformer layer whose
attention logits get the pair-interaction bias of each head, with NormFormer's extra norms
(after attention, inside the feed-forward) and learned per-head and residual scales. A class
attention block (CaiT, arXiv:2103.17239) lets a class token attend to itself and to every
particle; the particles are not updated. Biases are additive: -inf for a padded key.

Written from the papers for trainyard; module and parameter names follow weaver-core's Block
and Attention so their state_dict loads with strict=True.

Shape legend for tensor-name suffixes:
    B  batch (jets)
    T  queries (particles, or the one class token)
    S  keys (particles, with the class token first for class attention)
    E  embedding width
    H  attention heads, D = E / H their width
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FFN_RATIO = 4
"""The feed-forward layer is FFN_RATIO times as wide as the embedding."""


class Attention(nn.Module):
    """Multi-head attention with one packed input projection (q, k, v) and an additive bias."""

    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, query_BTE: torch.Tensor, keys_BSE: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """``bias`` broadcasts to (B, H, T, S); keys are also the values."""
        if query_BTE is keys_BSE:
            q_BTE, k_BSE, v_BSE = self.in_proj(query_BTE).chunk(3, dim=-1)
        else:
            width = query_BTE.shape[-1]
            weight_q, weight_kv = self.in_proj.weight.split((width, 2 * width))
            bias_q, bias_kv = self.in_proj.bias.split((width, 2 * width))
            q_BTE = F.linear(query_BTE, weight_q, bias_q)
            k_BSE, v_BSE = F.linear(keys_BSE, weight_kv, bias_kv).chunk(2, dim=-1)
        attended_BHTD = F.scaled_dot_product_attention(
            self._heads(q_BTE),
            self._heads(k_BSE),
            self._heads(v_BSE),
            attn_mask=bias.to(q_BTE.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )
        batch, _, queries, _ = attended_BHTD.shape
        return self.out_proj(attended_BHTD.transpose(1, 2).reshape(batch, queries, -1))

    def _heads(self, x_BTE: torch.Tensor) -> torch.Tensor:
        batch, length, width = x_BTE.shape
        return x_BTE.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)


class Block(nn.Module):
    """One particle attention block, or (called with ``x_cls``) one class attention block."""

    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pre_attn_norm = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads, dropout)
        self.post_attn_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.pre_fc_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, FFN_RATIO * width)
        self.act = nn.GELU()
        self.act_dropout = nn.Dropout(dropout)
        self.post_fc_norm = nn.LayerNorm(FFN_RATIO * width)
        self.fc2 = nn.Linear(FFN_RATIO * width, width)
        self.c_attn = nn.Parameter(torch.ones(num_heads))
        """Learned scale of each head's share of the attention output."""
        self.w_resid = nn.Parameter(torch.ones(width))
        """Learned scale of the feed-forward residual."""

    def forward(
        self, x_BPE: torch.Tensor, bias: torch.Tensor, x_cls_B1E: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Particles (B, P, E) updated, or with ``x_cls_B1E`` the class token (B, 1, E).

        ``bias`` is the additive attention bias: (B, H, P, P) for particles, (B, 1, 1, 1 + P)
        for the class token (its own key first).
        """
        if x_cls_B1E is None:
            residual = x_BPE
            normed = self.pre_attn_norm(x_BPE)
            x = self.attn(normed, normed, bias)
        else:
            residual = x_cls_B1E
            keys = self.pre_attn_norm(torch.cat((x_cls_B1E, x_BPE), dim=1))
            # The query is the class token as it came, the keys are normed (as in CaiT).
            x = self.attn(x_cls_B1E, keys, bias)
        batch, length, width = x.shape
        x = x.view(batch, length, self.num_heads, -1) * self.c_attn.view(-1, 1)
        x = self.dropout(self.post_attn_norm(x.reshape(batch, length, width)))
        x = x + residual
        residual = x
        x = self.act_dropout(self.act(self.fc1(self.pre_fc_norm(x))))
        x = self.dropout(self.fc2(self.post_fc_norm(x)))
        return x + self.w_resid * residual
