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
        self._ready = False  # mirrors ``initialised`` on the host (set by rebuild() and by loading a state)

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
        self._ready = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialised)  # once, when a checkpoint is loaded

    def forward(self, features: torch.Tensor, targets: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Loss of the batch against the memory, then (by default) the momentum update."""
        if not self._ready:  # (a Python flag: reading the buffer would synchronise with the GPU every step)
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
        self.memory = momentum_update(self.memory, x, targets, self.momentum, self.mode)


def momentum_update(memory: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, momentum: float,
                    mode: str = "hard") -> torch.Tensor:
    """The updated memory (a new tensor): ``m_y ← normalise(μ·m_y + (1−μ)·x̂_y)`` for every identity y in the batch.

    ``x̂_y`` is y's sample least similar to ``m_y`` (``hard``; the first such sample on a tie)
    or y's mean feature (``mean``).  All identities at once, by scatter reductions over the
    batch: a fixed number of kernels and no host synchronisation, whatever the number of
    identities (a per-identity loop costs ~10 kernels and two device→host reads each).
    """
    n = x.shape[0]
    rows = memory[targets]  # B×D: each sample's centroid
    if mode == "hard":
        sims = (x.unsqueeze(1) @ rows.unsqueeze(2)).view(n)  # x_i · m_{y_i}
        lowest = torch.full((memory.shape[0],), float("inf"), dtype=sims.dtype, device=sims.device)
        lowest = lowest.scatter_reduce(0, targets, sims, "amin")
        order = torch.arange(n, device=x.device)
        first = torch.where(sims == lowest[targets], order, n)  # the hardest samples, by batch position
        pick = torch.full((memory.shape[0],), n, dtype=order.dtype, device=x.device).scatter_reduce(0, targets, first, "amin")
        chosen = x[pick[targets]]  # B×D: the chosen sample of each sample's identity
    else:
        sums = torch.zeros_like(memory).index_add_(0, targets, x)
        counts = torch.zeros(memory.shape[0], dtype=x.dtype, device=x.device).index_add_(0, targets, x.new_ones(n))
        chosen = (sums / counts.clamp_min(1.0).unsqueeze(1))[targets]
    new_rows = F.normalize(momentum * rows + (1.0 - momentum) * chosen, dim=1)
    # every sample of identity y carries the same new row; writing them all is a plain scatter
    return memory.index_copy(0, targets, new_rows)
