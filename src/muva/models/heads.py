"""Re-ID heads: BNNeck with a frozen bias and a bias-free identity classifier."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BNNeck", "IdentityClassifier"]


class BNNeck(nn.Module):
    """``BatchNorm1d`` over the concatenated feature; its bias is fixed at 0 (not trained)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class IdentityClassifier(nn.Module):
    """Bias-free linear classifier over ``num_classes`` identities (normal init, small std)."""

    def __init__(self, dim: int, num_classes: int, init_std: float = 0.001):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=init_std)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
