"""L_mask: supervision of the predicted part masks by the grounding expert's pseudo masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2·Σpt + s) / (Σp + Σt + s)`` per mask (last dimension), averaged over all masks."""
    p = probs.float().flatten(0, -2)
    t = target.float().flatten(0, -2)
    inter = (p * t).sum(-1)
    return (1.0 - (2.0 * inter + smooth) / (p.sum(-1) + t.sum(-1) + smooth)).mean()


class MaskLoss(nn.Module):
    """BCE-with-logits + Dice of every layer's accumulated mask logits against the pseudo mask.

    ``forward(mask_logits, target)``: ``mask_logits`` is one ``B×R×L`` tensor per layer (a
    list) or a stacked ``layers×B×R×L`` tensor; ``target`` is ``B×R×L`` with 1 where the
    patch belongs to the part.  The loss is the mean over layers of
    ``bce_weight·BCE + dice_weight·Dice``; sigmoid uses temperature ``tau``.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, tau: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.tau = float(tau)
        self.smooth = float(smooth)

    def forward(self, mask_logits: list[torch.Tensor] | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        layers = list(mask_logits) if isinstance(mask_logits, (list, tuple)) else list(mask_logits.unbind(0))
        if not layers:
            raise ValueError("MaskLoss needs at least one layer of mask logits (is the model a global baseline?)")
        t = target.float()
        total = 0.0
        for logits in layers:
            z = logits.float() / self.tau
            if z.shape != t.shape:
                raise ValueError(f"mask logits {tuple(z.shape)} and pseudo masks {tuple(t.shape)} differ in shape")
            loss = z.new_zeros(())
            if self.bce_weight:
                loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(z, t)
            if self.dice_weight:
                loss = loss + self.dice_weight * dice_loss(torch.sigmoid(z), t, self.smooth)
            total = total + loss
        return total / len(layers)
