"""Distributed training helpers (``torchrun``): process group, rank, gathers.

``torchrun --nproc_per_node N -m muva train -c CONFIG`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``; :func:`init_distributed` then joins the process group with
NCCL on GPU and gloo on CPU.  Without those variables everything runs single-process and
the helpers below degrade to no-ops.  The collectives (gathers, barrier, broadcast) live in
:mod:`muva.utils.distributed`, so that lower layers (the losses) can use them; they are re-exported here.

``muva train --nproc-per-node N`` starts the N processes itself with torchrun's launcher
(:func:`launch`); an error is then printed once, by rank 0, without the launcher's own
failure report.
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
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from muva.utils.distributed import all_gather_tensor, barrier, broadcast_object, gather_by_index, is_distributed
from muva.utils.errors import MuvaError

__all__ = ["DistInfo", "DeviceError", "init_distributed", "cleanup", "all_gather_tensor", "gather_by_index", "barrier",
           "broadcast_object", "is_distributed", "launch"]


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
