"""Process groups and collectives that degrade to no-ops outside a process group (single-process runs).

``torchrun --nproc_per_node N -m muva ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``; :func:`init_distributed` then joins the process group with NCCL on GPU and
gloo on CPU, and :func:`launch` starts N local processes itself (``--nproc-per-node N``).
They live in this lowest layer so that every package may use them: the engine trains with
them (:mod:`muva.engine.distributed` re-exports them), ``muva ground run`` shards the images
by rank, and the memory bank of :mod:`muva.losses.memory` gathers the features of all ranks
before its momentum update.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist

from muva.utils.errors import MuvaError

__all__ = ["DistInfo", "DeviceError", "init_distributed", "cleanup", "launch", "is_distributed", "barrier",
           "all_gather_tensor", "gather_by_index", "broadcast_object", "all_gather_object"]


class DeviceError(MuvaError, RuntimeError):
    """A device asked for that is not available here."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the torchrun process group if launched by torchrun, and choose the device.

    ``device``: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
    """
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for but CUDA is not available here; use device=cpu (or auto)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        dev = torch.device(device if ":" in device else f"cuda:{local_rank}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = ""
    if world > 1 and not is_distributed():
        backend = "nccl" if want_cuda else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if want_cuda else {}))
    elif is_distributed():
        backend = dist.get_backend()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python ARGS`` in ``nproc`` local processes with torchrun's launcher; returns the exit code.

    The processes get torchrun's ``RANK``/``WORLD_SIZE``/... variables (a free port on
    127.0.0.1 for the rendezvous).  When they fail, the first failure's exit code is returned
    and the launcher's report is left out: rank 0 has already printed the error.
    """
    # torch's elastic launcher loads its agent, rendezvous and multiprocessing machinery: only when launching
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: no oversubscription of the cores
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=int(nproc), run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode]
        return int(codes[0]) if codes and codes[0] > 0 else 1
    return 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier(group=None) -> None:
    """Wait for every rank (of ``group``, default: all); a no-op outside a process group."""
    if is_distributed():
        dist.barrier(group=group)


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


def all_gather_object(obj, group=None) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` outside a process group."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out
