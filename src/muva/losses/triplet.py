"""Batch-hard triplet loss (Hermans et al. 2017), the metric loss of the CLIP-ReID baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix of the rows of ``x`` (clamped for a stable gradient at 0)."""
    sq = (x * x).sum(1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float | None = 0.3,
                       normalize: bool = False) -> torch.Tensor:
    """For every anchor: hardest positive and hardest negative in the batch.

    ``margin=None`` gives the soft-margin form ``softplus(d_ap - d_an)``.  Anchors without
    a positive or a negative in the batch are ignored (an all-one-identity batch gives 0).
    """
    x = features.float()
    if normalize:
        x = F.normalize(x, dim=1)
    dist = pairwise_euclidean(x)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    valid = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, dist, torch.full_like(dist, -1.0)).max(1).values
    d_an = torch.where(neg, dist, torch.full_like(dist, float("inf"))).min(1).values
    per = F.softplus(d_ap - d_an) if margin is None else F.relu(d_ap - d_an + margin)
    # the mean over the valid anchors without reading anything back (no boolean indexing, no
    # .item(): on a GPU either would stall the host every step); all invalid gives 0
    return torch.where(valid, per, torch.zeros_like(per)).sum() / valid.sum().clamp_min(1)


class TripletLoss(nn.Module):
    """Module form of :func:`batch_hard_triplet`; a list of features gives the mean."""

    def __init__(self, margin: float | None = 0.3, normalize: bool = False):
        super().__init__()
        self.margin = margin
        self.normalize = normalize

    def forward(self, features: torch.Tensor | list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if isinstance(features, (list, tuple)):
            return sum(batch_hard_triplet(f, labels, self.margin, self.normalize) for f in features) / len(features)
        return batch_hard_triplet(features, labels, self.margin, self.normalize)
