"""``torch.compile`` for the training forward (the ``compile`` and ``compile_mode`` config keys).

:func:`compile_model` returns a callable with the model's signature that runs the
compiled graph.  The model itself stays as it is (its ``state_dict`` keys, ``train()`` /
``eval()``, checkpoints), so turning compilation on or off changes nothing on disk.

* The batch axis of the images is marked dynamic at the first call, so one graph serves
  every batch size (the short last batch of an epoch, a different ``batch_size``) — no
  recompilation every epoch.  (A batch of one is specialised by PyTorch and compiles once
  more.)
* The MUVA forward has no graph breaks (checked by the test suite with
  ``torch._dynamo.explain``): masks are built by tensor ops of fixed shape, there is no
  per-part Python loop, no ``.item()`` and no branch on tensor values.
* Modes: ``default``; ``reduce-overhead`` (CUDA graphs: the launch overhead of small
  kernels disappears, at the cost of memory per captured batch size); ``max-autotune``.

Before compiling, the toolchain is checked (a C++ compiler for CPU, Triton for CUDA) so a
missing one is one clear error instead of a failure at the first step.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Callable

import torch
from torch import nn

from muva.models.config import COMPILE_MODES
from muva.utils.errors import MuvaError

__all__ = ["COMPILE_MODES", "CompileError", "check_compile_toolchain", "compile_model"]


class CompileError(MuvaError, RuntimeError):
    """``torch.compile`` cannot run here (missing toolchain, or the backend failed)."""


def check_compile_toolchain(device: torch.device | str) -> None:
    """Raise :class:`CompileError` when the compiler ``torch.compile`` needs on ``device`` is missing."""
    kind = torch.device(device).type
    if kind == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise CompileError("compile=true on CUDA needs Triton (pip install triton); or set compile=false")
        return
    if kind == "cpu":
        names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(n) for n in names):
            raise CompileError(f"compile=true on CPU needs a C++ compiler ({' or '.join(names)} on PATH, e.g. "
                               "apt-get install g++); or set compile=false")
        return
    raise CompileError(f"compile=true is not supported on device {kind!r}; set compile=false")


def compile_model(model: nn.Module, mode: str = "default", device: torch.device | str | None = None) -> Callable:
    """A compiled forward of ``model`` (call it like the model; the model object is unchanged).

    ``device`` (default: the device of the model's first parameter) decides which
    toolchain is checked.  A backend failure at the first call is a :class:`CompileError`.
    """
    if mode not in COMPILE_MODES:
        raise CompileError(f"unknown compile_mode {mode!r}; use one of {', '.join(COMPILE_MODES)}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    check_compile_toolchain(device)
    compiled = torch.compile(model, mode=mode, dynamic=None)

    def forward(images, *args, **kwargs):
        if images.ndim and images.shape[0] > 1:  # the batch axis symbolic from the first call: one graph for every size
            torch._dynamo.maybe_mark_dynamic(images, 0)
        try:
            return compiled(images, *args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CompileError(f"torch.compile failed ({first}); set compile=false to train without it") from None

    return forward
