"""User models as an experiment names them ('tests.models.user_models:...'), some of which
break the model interface in the ways a newcomer does."""

from __future__ import annotations

import torch
from torch import nn


class Pooled(nn.Module):
    """A masked mean over the particles, then a linear layer with `outputs` outputs."""

    def __init__(self, num_features: int, outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, outputs)

    def forward(self, points, features, mask):
        pooled = (features * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
        return self.head(self.dropout(self.norm(pooled)))


def good(num_features: int, num_classes: int) -> nn.Module:
    return Pooled(num_features, num_classes, dropout=0.5)


class OneScore(Pooled):
    """One sigmoid-style score per jet, shape (B,), as a binary classifier often has."""

    def forward(self, points, features, mask):
        return super().forward(points, features, mask).squeeze(-1)


def one_score(num_features: int, num_classes: int) -> nn.Module:
    return OneScore(num_features, 1)


def three_classes(num_features: int, num_classes: int) -> nn.Module:
    """Ignores num_classes and always has three outputs."""
    return Pooled(num_features, 3)


class TwoInputs(Pooled):
    def forward(self, features, mask):  # type: ignore[override]
        return super().forward(None, features, mask)


def two_inputs(num_features: int, num_classes: int) -> nn.Module:
    return TwoInputs(num_features, num_classes)


class WrongFeatureCount(nn.Module):
    """Expects a fixed 5 features per particle, whatever the data has."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(5, num_classes)

    def forward(self, points, features, mask):
        return self.head(features.mean(dim=-1))


def wrong_feature_count(num_features: int, num_classes: int) -> nn.Module:
    return WrongFeatureCount(num_classes)


class LogitsAndEmbedding(Pooled):
    def forward(self, points, features, mask):
        logits = super().forward(points, features, mask)
        return logits, torch.zeros_like(logits)


def logits_and_embedding(num_features: int, num_classes: int) -> nn.Module:
    return LogitsAndEmbedding(num_features, num_classes)
