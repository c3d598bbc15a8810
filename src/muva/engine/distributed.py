"""Distributed training helpers (``torchrun``): process group, rank, gathers.

``torchrun --nproc_per_node N -m muva train -c CONFIG`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``; :func:`init_distributed` then joins the process group with
NCCL on GPU and gloo on CPU.  Without those variables everything runs single-process and
the helpers below degrade to no-ops.  The process group and the collectives (gathers,
barrier, broadcast) live in :mod:`muva.utils.distributed`, so that lower layers (the
losses, ``muva ground run``) can use them; they are re-exported here.

``muva train --nproc-per-node N`` starts the N processes itself with torchrun's launcher
(:func:`launch`); an error is then printed once, by rank 0, without the launcher's own
failure report.
"""

from __future__ import annotations

from muva.utils.distributed import (
    DeviceError,
    DistInfo,
    all_gather_tensor,
    barrier,
    broadcast_object,
    cleanup,
    gather_by_index,
    init_distributed,
    is_distributed,
    launch,
)

__all__ = ["DistInfo", "DeviceError", "init_distributed", "cleanup", "all_gather_tensor", "gather_by_index", "barrier",
           "broadcast_object", "is_distributed", "launch"]
