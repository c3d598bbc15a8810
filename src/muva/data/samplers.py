"""P×K random identity sampler, deterministic and DDP-aware, with state for resume.

Every epoch draws one *global* stream of batches from ``seed + epoch`` (the same on every
rank): identities are shuffled, each identity's images are shuffled and cut into groups of
K (an identity with fewer than K images is drawn with replacement), and P groups of
distinct identities form a batch of ``batch_size = P·K``.  Under DDP each global batch is
cut into ``world_size`` disjoint slices of whole identity groups, so rank r trains on
slice r of every batch: the union of the ranks is exactly the single-process stream, and
the effective batch stays ``batch_size`` whatever the number of processes.

The sampler yields ``(dataset_index, augmentation_seed)`` pairs; the seed drives the
random flip/erasing of that sample, so augmentations are reproducible under resume and
any number of loader workers.  :meth:`state_dict` / :meth:`load_state_dict` store the
epoch and the number of batches already consumed, and iteration resumes mid-epoch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np

__all__ = ["RandomIdentitySampler", "SequentialShardSampler"]


class RandomIdentitySampler:
    """Yields ``(index, aug_seed)`` for this rank's slice of P×K batches.

    Args:
        pids: the (relabelled) identity of every training sample.
        batch_size: global batch size P·K (divisible by ``num_instances``; per-rank batch is
            ``batch_size / world_size`` and must hold whole identity groups).
        num_instances: K, images per identity in a batch.
        seed: shared seed; every rank must pass the same.
        world_size, rank: DDP shard of each batch.
    """

    def __init__(self, pids: Sequence[int], batch_size: int = 64, num_instances: int = 4, seed: int = 0,
                 world_size: int = 1, rank: int = 0):
        if num_instances < 1 or batch_size % num_instances:
            raise ValueError(f"batch size {batch_size} must be a multiple of images per identity K={num_instances}")
        if batch_size % (world_size * num_instances):
            raise ValueError(
                f"batch size {batch_size} cannot be split into {world_size} processes of whole identity groups "
                f"(K={num_instances}); use a multiple of {world_size * num_instances}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.pids = np.asarray(pids, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_pids_per_batch = self.batch_size // self.num_instances
        self.seed = int(seed)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.local_batch_size = self.batch_size // self.world_size
        self.index_by_pid: dict[int, np.ndarray] = {}
        groups: dict[int, list[int]] = defaultdict(list)
        for i, p in enumerate(self.pids.tolist()):
            groups[p].append(i)
        self.index_by_pid = {p: np.asarray(v, dtype=np.int64) for p, v in sorted(groups.items())}
        if len(self.index_by_pid) < self.num_pids_per_batch:
            raise ValueError(f"only {len(self.index_by_pid)} identities for {self.num_pids_per_batch} per batch "
                             f"(batch {batch_size} / K {num_instances}); lower the batch size")
        self.epoch = 0
        self.start_batch = 0
        self._num_batches = self._count_batches()

    # ------------------------------------------------------------------ stream
    def _count_batches(self) -> int:
        groups = sum(max(1, len(v) // self.num_instances) for v in self.index_by_pid.values())
        return max(1, groups // self.num_pids_per_batch)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """The full (all-rank) list of batches of ``epoch``; each is an array of P·K indices."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.num_instances
        chunks: dict[int, list[np.ndarray]] = {}
        for pid, idxs in self.index_by_pid.items():
            if len(idxs) < k:
                idxs = rng.choice(idxs, size=k, replace=True)
            else:
                idxs = rng.permutation(idxs)
            n = len(idxs) // k
            chunks[pid] = [idxs[j * k:(j + 1) * k] for j in range(n)]
        available = [p for p in chunks if chunks[p]]
        batches: list[np.ndarray] = []
        while len(available) >= self.num_pids_per_batch:
            chosen = rng.choice(len(available), size=self.num_pids_per_batch, replace=False)
            chosen_pids = [available[i] for i in sorted(chosen.tolist())]
            rng.shuffle(chosen_pids)
            batches.append(np.concatenate([chunks[p].pop(0) for p in chosen_pids]))
            available = [p for p in available if chunks[p]]
        return batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        batches = self.global_batches(self.epoch)
        lo = self.rank * self.local_batch_size
        hi = lo + self.local_batch_size
        for b in range(self.start_batch, len(batches)):
            batch = batches[b]
            for pos in range(lo, hi):
                # one augmentation seed per (seed, epoch, batch, position) -> same on resume
                yield int(batch[pos]), int(_mix(self.seed, self.epoch, b, pos))
        self.start_batch = 0

    def __len__(self) -> int:
        """Samples this rank yields in a full epoch (approximate: the stream length varies slightly)."""
        return self._num_batches * self.local_batch_size

    def batches_per_epoch(self) -> int:
        return len(self.global_batches(self.epoch))

    # ------------------------------------------------------------------ state
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's stream and the first batch to yield (for mid-epoch resume)."""
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch,
                "batch_size": self.batch_size, "num_instances": self.num_instances}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler seed in checkpoint ({state['seed']}) differs from the config ({self.seed})")
        self.set_epoch(state["epoch"], state.get("start_batch", 0))


class SequentialShardSampler:
    """Indices ``rank, rank + world, …`` of ``n`` samples (evaluation/extraction under DDP)."""

    def __init__(self, n: int, world_size: int = 1, rank: int = 0):
        self.n, self.world_size, self.rank = int(n), int(world_size), int(rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def _mix(*values: int) -> int:
    """A 63-bit hash of integers (splitmix64-style), stable across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h ^= (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF
