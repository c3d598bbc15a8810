"""Label-smoothed cross-entropy (the identity loss L_id)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def label_smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against ``(1 - ε)·onehot + ε / C`` (Szegedy et al.), averaged over the batch.

    Computed in float32 whatever the input precision, so AMP logits do not lose the
    smoothing term.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


class LabelSmoothingCE(nn.Module):
    """Module form of :func:`label_smoothed_ce`; a list of logits gives the mean of their losses."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor | list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, (list, tuple)):
            return sum(label_smoothed_ce(x, targets, self.epsilon) for x in logits) / len(logits)
        return label_smoothed_ce(logits, targets, self.epsilon)
