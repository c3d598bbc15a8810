"""Collectives that degrade to no-ops outside a process group (single-process runs).

Used by the engine (:mod:`muva.engine.distributed` re-exports them) and by lower layers
such as the memory bank of :mod:`muva.losses.memory`, which gathers the features of all
ranks before its momentum update.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "barrier", "all_gather_tensor", "gather_by_index", "broadcast_object"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_tensor(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank except dim 0) from all ranks, rank order."""
    if not is_distributed():
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    biggest = max(sizes)
    padded = x.new_zeros((biggest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def gather_by_index(values: torch.Tensor, indices: torch.Tensor, total: int) -> torch.Tensor:
    """Gather each rank's rows (``values[i]`` belongs to sample ``indices[i]``) into one ``total``-row tensor."""
    values = all_gather_tensor(values)
    indices = all_gather_tensor(indices.to(values.device))
    out = values.new_zeros((total, *values.shape[1:]))
    out[indices.long()] = values
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
