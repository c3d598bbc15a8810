"""Keep freed tensor memory inside the process (glibc ``malloc`` tuning for CPU work).

PyTorch's CPU allocator takes every tensor from ``malloc``.  glibc serves large blocks
(a ViT-B batch's activations are tens of MB each) with fresh ``mmap`` calls and gives
them back to the kernel on ``free``, so a forward pass can fault its working set in
again page by page.  Measured on this 2-core machine with the full ViT-B/16 MUVA:
eight back-to-back batches of 16 images took 1.78–1.96 s each with 3.8 million minor
page faults, and 1.36–1.59 s with 0.4 million after this tuning; ``muva extract`` of
160 images, 21.2–21.6 s → 19.1–20.8 s.  How much it helps depends on the heap's
history (a process whose heap already grew, e.g. after other work, faults less).
Raising glibc's mmap and trim thresholds keeps freed blocks in the heap for the next
batch — what tcmalloc or jemalloc (the allocators PyTorch's CPU performance guides
suggest via ``LD_PRELOAD``) do, without another library.  The price is that the
process keeps its peak heap (≈ +15 % RSS in the first measurement) until it exits.

The ``muva`` command line calls :func:`retain_freed_memory` once at start (set
``MUVA_MALLOC_TUNING=0`` to opt out); library users call it themselves::

    from muva.utils.memory import retain_freed_memory
    retain_freed_memory()        # False where the C library is not glibc

ONNX Runtime has its own memory arena and is not affected.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["retain_freed_memory", "tuning_enabled", "ENV_VAR"]

#: environment variable that turns the command line's tuning off (``0``/``false``/``no``).
ENV_VAR = "MUVA_MALLOC_TUNING"

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_applied: bool | None = None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:  # the process's own symbols (no ldconfig lookup: this runs at every CLI start)
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt as a no-op stub)
        libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory(threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks up to ``threshold`` bytes for reuse; True when applied.

    Idempotent; returns False (and changes nothing) on other C libraries and platforms.
    """
    global _applied
    if _applied is not None:
        return _applied
    libc = _glibc()
    ok = False
    if libc is not None:
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))) and bool(libc.mallopt(_M_TRIM_THRESHOLD, int(threshold)))
    _applied = ok
    return ok


def tuning_enabled(environ=os.environ) -> bool:
    """Whether the command line should call :func:`retain_freed_memory` (``MUVA_MALLOC_TUNING``)."""
    return environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")
