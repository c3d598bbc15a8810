"""Re-ID heads: BNNeck with a frozen bias and a bias-free identity classifier."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BNNeck", "IdentityClassifier"]


class BNNeck(nn.Module):
    """``BatchNorm1d`` over the concatenated feature; its bias is fixed at 0 (not trained).

    ``momentum`` is the running-statistics momentum.  The reference applies its BN neck
    twice to the same batch in every training step (once for the classifier, once for the
    memory loss); both calls give the same output and, with momentum 0.1, update the
    running statistics as one update with momentum ``1 − 0.9² = 0.19`` — muva's default.
    """

    def __init__(self, dim: int, momentum: float = 0.19):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, momentum=momentum)
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
