"""L_mask: supervision of the predicted part masks by the grounding expert's pseudo masks.

As the reference implementation, for every layer's accumulated logits ``z`` (``B×R×L``)
and pseudo mask ``t`` (1 = patch in part):

* BCE-with-logits of the **raw** logits ``z`` against ``t``, averaged over every
  (layer, sample, part, patch);
* Dice of the probabilities ``p = sigmoid(z / τ)`` — the same probabilities the gate
  thresholds — per (layer, sample, part) row over the L patches,
  ``1 − (2·Σpt + s) / (Σp + Σt + s)``, averaged over the rows.  The reference computes its
  sums scaled by 1/1000 with smoothing 1e-6, i.e. ``s = 1e-3`` on the raw sums.

An empty pseudo mask (a part the expert did not find) is a valid target: its Dice row is
``s / (Σp + s)``, small only when the prediction is empty too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the reference's Dice smoothing on raw sums (1e-6 on sums scaled by 1/1000).
REFERENCE_DICE_SMOOTH = 1e-3


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = REFERENCE_DICE_SMOOTH) -> torch.Tensor:
    """``1 - (2·Σpt + s) / (Σp + Σt + s)`` per mask (last dimension), averaged over all masks."""
    p = probs.float().flatten(0, -2)
    t = target.float().flatten(0, -2)
    inter = (p * t).sum(-1)
    return (1.0 - (2.0 * inter + smooth) / (p.sum(-1) + t.sum(-1) + smooth)).mean()


class MaskLoss(nn.Module):
    """``bce_weight·BCE + dice_weight·Dice`` of every layer's mask logits against the pseudo mask.

    ``forward(mask_logits, target)``: ``mask_logits`` is one ``B×R×L`` tensor per layer (a
    list) or a stacked ``layers×B×R×L`` tensor; ``target`` is ``B×R×L`` with 1 where the
    patch belongs to the part.  ``tau`` is the model's mask temperature
    (``model.mask_temperature``): it scales the logits of the Dice probabilities, as in the
    gate; the BCE takes the raw logits (the reference).
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, tau: float = 1.0,
                 smooth: float = REFERENCE_DICE_SMOOTH):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"mask temperature tau must be > 0, got {tau}")
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.tau = float(tau)
        self.smooth = float(smooth)

    def components(self, mask_logits: list[torch.Tensor] | torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted ``{"bce": …, "dice": …}`` over all layers."""
        layers = list(mask_logits) if isinstance(mask_logits, (list, tuple)) else list(mask_logits.unbind(0))
        if not layers:
            raise ValueError("MaskLoss needs at least one layer of mask logits (is the model a global baseline?)")
        z = torch.stack([x.float() for x in layers])
        t = target.float()
        if z.shape[1:] != t.shape:
            raise ValueError(f"mask logits {tuple(z.shape[1:])} and pseudo masks {tuple(t.shape)} differ in shape")
        t = t.expand_as(z)
        return {"bce": F.binary_cross_entropy_with_logits(z, t),
                "dice": dice_loss(torch.sigmoid(z / self.tau), t, self.smooth)}

    def forward(self, mask_logits: list[torch.Tensor] | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = self.components(mask_logits, target)
        return self.bce_weight * c["bce"] + self.dice_weight * c["dice"]
