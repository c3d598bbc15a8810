"""Training losses for MUVA and the CLIP-ReID baseline, registered by name in :data:`LOSSES`.

=============  ==========================================================================
name           what it is
=============  ==========================================================================
``id``         label-smoothed cross-entropy of the identity classifier (ε = 0.1)
``imp``        cluster-memory contrastive loss (identity centroids, momentum, hard update)
``i2t``        label-smoothed CE of image features against frozen text prototypes
``mask``       BCE-with-logits + Dice of every layer's mask logits vs pseudo masks
``prompt``     MUVA stage 1: CE of normalised text features against image centroids
``supcon``     CLIP-ReID stage 1: supervised image↔text contrastive loss (i2t + t2i)
``triplet``    batch-hard triplet loss (margin 0.3) of the CLIP-ReID baseline
=============  ==========================================================================

Every loss is a ``torch.nn.Module`` whose constructor takes plain keyword arguments,
so ``LOSSES.get(name)(**kwargs)`` builds one from a config section.
"""

from muva.losses.alignment import PromptCentroidLoss, SupConLoss, image_to_text_ce
from muva.losses.classification import LabelSmoothingCE, label_smoothed_ce
from muva.losses.mask import MaskLoss, dice_loss
from muva.losses.memory import ClusterMemory
from muva.losses.triplet import TripletLoss, batch_hard_triplet
from muva.registry import Registry

LOSSES = Registry("loss")
LOSSES.add("id", LabelSmoothingCE, aliases=("ce", "label-smoothing-ce"))
LOSSES.add("imp", ClusterMemory, aliases=("cluster-memory",))
LOSSES.add("i2t", LabelSmoothingCE, aliases=("i2tce",))
LOSSES.add("mask", MaskLoss)
LOSSES.add("prompt", PromptCentroidLoss)
LOSSES.add("supcon", SupConLoss, aliases=("i2t-t2i",))
LOSSES.add("triplet", TripletLoss)

__all__ = [
    "LOSSES",
    "ClusterMemory",
    "LabelSmoothingCE",
    "MaskLoss",
    "PromptCentroidLoss",
    "SupConLoss",
    "TripletLoss",
    "batch_hard_triplet",
    "dice_loss",
    "image_to_text_ce",
    "label_smoothed_ce",
]
