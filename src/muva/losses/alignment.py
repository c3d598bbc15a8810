"""Vision-language alignment losses: MUVA's stage-1 prompt loss, i2t CE, CLIP-ReID's SupCon."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muva.losses.classification import label_smoothed_ce


def image_to_text_ce(image_features: torch.Tensor, text_prototypes: torch.Tensor, targets: torch.Tensor,
                     epsilon: float = 0.1) -> torch.Tensor:
    """L_i2tce: label-smoothed CE of ``image_features @ text_prototypesᵀ`` (unnormalised, as in CLIP-ReID)."""
    logits = image_features.float() @ text_prototypes.float().t()
    return label_smoothed_ce(logits, targets, epsilon)


class PromptCentroidLoss(nn.Module):
    """MUVA stage 1: CE of L2-normalised text features against L2-normalised identity centroids / T.

    ``centroids`` is the visual prototype memory (num_ids × D) computed once from the frozen
    image encoder; the loss trains the prompt tokens so that identity ``y``'s text feature is
    closest to centroid ``y``.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, text_features: torch.Tensor, centroids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = F.normalize(text_features.float(), dim=1)
        c = F.normalize(centroids.float(), dim=1)
        return F.cross_entropy(t @ c.t() / self.temperature, targets.long())


class SupConLoss(nn.Module):
    """Supervised contrastive loss between two sets of features (CLIP-ReID stage 1).

    ``forward(anchors, contrasts, anchor_labels, contrast_labels)``: for each anchor, the
    mean log-probability of its positives (same label) among all contrasts, negated and
    averaged.  CLIP-ReID's stage 1 sums ``supcon(img, txt)`` (i2t) and ``supcon(txt, img)``
    (t2i) with T = 1.  With ``symmetric=True`` the module computes both directions itself.
    """

    def __init__(self, temperature: float = 1.0, symmetric: bool = True):
        super().__init__()
        self.temperature = float(temperature)
        self.symmetric = symmetric

    def one_way(self, anchors: torch.Tensor, contrasts: torch.Tensor, a_labels: torch.Tensor,
                c_labels: torch.Tensor) -> torch.Tensor:
        logits = anchors.float() @ contrasts.float().t() / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        positives = (a_labels.view(-1, 1) == c_labels.view(1, -1)).float()
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        count = positives.sum(1).clamp_min(1.0)
        return -((positives * log_prob).sum(1) / count).mean()

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                text_labels: torch.Tensor | None = None) -> torch.Tensor:
        text_labels = labels if text_labels is None else text_labels
        loss = self.one_way(image_features, text_features, labels, text_labels)
        if self.symmetric:
            loss = loss + self.one_way(text_features, image_features, text_labels, labels)
        return loss
