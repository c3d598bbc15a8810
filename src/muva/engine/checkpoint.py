"""Checkpoints: atomic writes, full training state, best/last bookkeeping.

A checkpoint is one ``torch.save`` file holding everything needed to continue a run as if
it had never stopped: model, optimiser, LR scheduler, AMP grad scaler, sampler position,
loss-module buffers (the cluster memory), the RNG states of Python, NumPy and torch, the
stage, epoch and iteration.  Files are written to a temporary name beside the target and
renamed over it (``os.replace``), so a crash or ``kill -9`` in the middle of a write leaves
the previous checkpoint intact.

Run folder layout (``output.dir``)::

    last.pt                # most recent state (every N iterations and at each epoch end)
    best.pt                # state with the best evaluation metric so far
    stage1.pt              # state at the end of stage 1 (prompt learning)
    model.safetensors      # final weights in the model package's format (save_model)
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muva.utils.io import atomic_write
from muva.utils.errors import MuvaError

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "rng_state", "set_rng_state", "CheckpointError"]

FORMAT_VERSION = 1


class CheckpointError(MuvaError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the run."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Serialise ``state`` in memory, then write it atomically (temp file + fsync + rename)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buf)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getbuffer())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a muva training checkpoint (for model weights use muva.models.load_model)")
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, Any], where: str, hint: str) -> None:
    """``model.load_state_dict(weights)``, or one :class:`CheckpointError` line: ``where`` does not fit, ``hint``."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:  # torch lists every mismatching tensor over dozens of lines
        raise CheckpointError(f"{where} does not fit the model ({str(exc).splitlines()[0]}); {hint}") from None
