"""The built-in stage-2 loss terms, registered in :data:`muva.losses.LOSSES`.

Each wraps one of the loss modules of this package and reads its settings from the
``stage2`` config section (``ctx.cfg``):

=============  ===========================================================================
``id``         :class:`LabelSmoothingCE` (``label_smoothing``) of the classifier logits
``imp``        :class:`ClusterMemory` (``memory_temperature``, ``memory_momentum``,
               ``memory_mode``) on the BN-neck features; rebuilt at every epoch start
``i2t``        :func:`image_to_text_ce` of the projected feature against the frozen text
               prototypes (smoothing ``label_smoothing``)
``mask``       :class:`MaskLoss` (``mask_bce_weight``, ``mask_dice_weight``,
               ``mask_dice_smooth``, τ = ``model.mask_temperature``) of every layer's mask
               logits against the pseudo masks; left out for a model without parts
``triplet``    :class:`TripletLoss` (``triplet_margin``) of the pre-BN features
=============  ===========================================================================
"""

from __future__ import annotations

import torch

from muva.losses.alignment import image_to_text_ce
from muva.losses.classification import LabelSmoothingCE
from muva.losses.mask import MaskLoss
from muva.losses.memory import ClusterMemory
from muva.losses.terms import LossContext, LossTerm, register_loss
from muva.losses.triplet import TripletLoss

__all__ = ["IdentityTerm", "MemoryTerm", "ImageTextTerm", "MaskTerm", "TripletTerm"]


@register_loss("id", aliases=("label-smoothing-ce",))
class IdentityTerm(LossTerm):
    """L_id: label-smoothed CE of the identity classifier's logits."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.ce = LabelSmoothingCE(epsilon)

    @classmethod
    def build(cls, ctx: LossContext) -> "IdentityTerm":
        return cls(ctx.cfg.label_smoothing)

    def forward(self, out: dict, batch: dict) -> torch.Tensor:
        return self.ce(out["logits"], batch["pid"])


@register_loss("imp", aliases=("cluster-memory",))
class MemoryTerm(LossTerm):
    """L_imp: cluster-memory contrastive loss of the BN-neck features (memory in ``self.memory``)."""

    needs_epoch_features = True

    def __init__(self, memory: ClusterMemory):
        super().__init__()
        self.memory = memory

    @classmethod
    def build(cls, ctx: LossContext) -> "MemoryTerm":
        c = ctx.cfg
        return cls(ClusterMemory(ctx.feature_dim, ctx.num_classes, c.memory_temperature, c.memory_momentum,
                                 c.memory_mode))

    def rebuild(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.memory.rebuild(features, labels)

    def forward(self, out: dict, batch: dict) -> torch.Tensor:
        return self.memory(out["bn_features"], batch["pid"])


@register_loss("i2t", aliases=("i2tce",))
class ImageTextTerm(LossTerm):
    """L_i2tce: label-smoothed CE of the projected image feature against the frozen text prototypes."""

    needs_text = True

    def __init__(self, text_prototypes: torch.Tensor | None, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = float(epsilon)
        self.register_buffer("text", text_prototypes if text_prototypes is not None else torch.zeros(0),
                             persistent=False)

    @classmethod
    def build(cls, ctx: LossContext) -> "ImageTextTerm":
        return cls(ctx.text_prototypes, ctx.cfg.label_smoothing)

    def forward(self, out: dict, batch: dict) -> torch.Tensor:
        if self.text.numel() == 0:
            raise RuntimeError("the i2t loss term was built without text prototypes (LossContext.text_prototypes)")
        return image_to_text_ce(out["proj_features"], self.text, batch["pid"], self.epsilon)


@register_loss("mask")
class MaskTerm(LossTerm):
    """L_mask: BCE + Dice of every layer's mask logits against the pseudo masks."""

    needs_parts = True
    needs_pseudo_masks = True

    def __init__(self, loss: MaskLoss):
        super().__init__()
        self.loss = loss

    @classmethod
    def build(cls, ctx: LossContext) -> "MaskTerm":
        c = ctx.cfg
        return cls(MaskLoss(c.mask_bce_weight, c.mask_dice_weight, ctx.mask_temperature, c.mask_dice_smooth))

    def forward(self, out: dict, batch: dict) -> torch.Tensor:
        return self.loss(out["mask_logits"], batch["mask"])


@register_loss("triplet")
class TripletTerm(LossTerm):
    """Batch-hard triplet loss of the pre-BN features (the CLIP-ReID baseline)."""

    def __init__(self, margin: float | None = 0.3):
        super().__init__()
        self.triplet = TripletLoss(margin)

    @classmethod
    def build(cls, ctx: LossContext) -> "TripletTerm":
        return cls(ctx.cfg.triplet_margin)

    def forward(self, out: dict, batch: dict) -> torch.Tensor:
        return self.triplet(out["features"], batch["pid"])
