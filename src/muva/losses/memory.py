"""L_imp: the cluster-memory (identity-memory) contrastive loss.

A memory holds one L2-normalised centroid per training identity.  At the start of each
epoch it is rebuilt from the features of all training images (:meth:`ClusterMemory.rebuild`);
after every batch it is moved towards the batch (:meth:`ClusterMemory.update`):

* ``mode="hard"`` (MUVA's default): for each identity in the batch, take the sample least
  similar to its centroid (the hardest) and set ``m ← normalise(μ·m + (1-μ)·x_hard)``;
* ``mode="mean"``: the same with the mean of the identity's batch features.

The loss is the cross-entropy of ``normalise(x) · memoryᵀ / T`` (T = 0.01) against the
identity.  Under DDP the update uses the features of every rank (all-gathered), so all
ranks keep one identical memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muva.utils.distributed import all_gather_tensor


class ClusterMemory(nn.Module):
    """Identity-centroid memory with momentum ``μ`` (0.2) and temperature ``T`` (0.01)."""

    def __init__(self, num_features: int, num_classes: int, temperature: float = 0.01, momentum: float = 0.2,
                 mode: str = "hard"):
        super().__init__()
        if mode not in ("hard", "mean"):
            raise ValueError(f"cluster memory mode must be 'hard' or 'mean', got {mode!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.mode = mode
        self.register_buffer("memory", torch.zeros(num_classes, num_features))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def rebuild(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Set every centroid to the normalised mean of its identity's (normalised) features."""
        feats = F.normalize(features.float(), dim=1).to(self.memory.device)
        labels = labels.long().to(self.memory.device)
        sums = torch.zeros_like(self.memory).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=self.num_classes)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten()[:10].tolist()
            raise ValueError(f"cluster memory rebuild: identities without features, e.g. {missing}")
        self.memory = F.normalize(sums, dim=1)
        self.initialised.fill_(True)

    def forward(self, features: torch.Tensor, targets: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Loss of the batch against the memory, then (by default) the momentum update."""
        if not bool(self.initialised):
            raise RuntimeError("ClusterMemory used before rebuild(): call rebuild() at the start of each epoch")
        x = F.normalize(features.float(), dim=1)
        logits = x @ self.memory.t() / self.temperature  # memory is replaced, not modified, by update()
        loss = F.cross_entropy(logits, targets.long())
        if update:
            self.update(x.detach(), targets)
        return loss

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Momentum update of the centroids of the identities present (features of all ranks)."""
        x = F.normalize(features.float(), dim=1)
        targets = targets.long()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            x = all_gather_tensor(x)
            targets = all_gather_tensor(targets)
        memory = self.memory.clone()
        for pid in torch.unique(targets).tolist():
            feats = x[targets == pid]
            if self.mode == "hard":
                sims = feats @ memory[pid]
                chosen = feats[int(torch.argmin(sims))]
            else:
                chosen = feats.mean(0)
            memory[pid] = F.normalize(self.momentum * memory[pid] + (1.0 - self.momentum) * chosen, dim=0)
        self.memory = memory
