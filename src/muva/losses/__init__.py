"""Training losses for MUVA and the CLIP-ReID baseline.

The stage-2 objective is a weighted sum of registered loss terms (:data:`LOSSES`, see
:mod:`muva.losses.terms` for the contract and :func:`register_loss` to add one from a plugin);
``stage2.weights`` weights them by name:

=============  ==========================================================================
stage-2 term   what it is
=============  ==========================================================================
``id``         label-smoothed cross-entropy of the identity classifier (ε = 0.1)
``imp``        cluster-memory contrastive loss (identity centroids, momentum, hard update)
``i2t``        label-smoothed CE of image features against frozen text prototypes
``mask``       BCE-with-logits + Dice of every layer's mask logits vs pseudo masks
``triplet``    batch-hard triplet loss (margin 0.3) of the CLIP-ReID baseline
=============  ==========================================================================

Stage 1 uses :class:`PromptCentroidLoss` (MUVA: CE of normalised text features against
image centroids) or :class:`SupConLoss` (CLIP-ReID: supervised image↔text contrastive
loss).  The loss modules themselves (:class:`LabelSmoothingCE`, :class:`ClusterMemory`,
:class:`MaskLoss`, :class:`TripletLoss`, ...) take plain keyword arguments.
"""

from muva.losses.alignment import PromptCentroidLoss, SupConLoss, image_to_text_ce
from muva.losses.classification import LabelSmoothingCE, label_smoothed_ce
from muva.losses.mask import MaskLoss, dice_loss
from muva.losses.memory import ClusterMemory
from muva.losses.terms import LOSSES, LossConfigError, LossContext, LossTerm, register_loss, resolve_weights
from muva.losses.triplet import TripletLoss, batch_hard_triplet
from muva.losses import builtin as _builtin  # noqa: F401,I001 - registers the built-in terms

__all__ = [
    "LOSSES",
    "ClusterMemory",
    "LabelSmoothingCE",
    "LossConfigError",
    "LossContext",
    "LossTerm",
    "MaskLoss",
    "PromptCentroidLoss",
    "SupConLoss",
    "TripletLoss",
    "batch_hard_triplet",
    "dice_loss",
    "image_to_text_ce",
    "label_smoothed_ce",
    "register_loss",
    "resolve_weights",
]
