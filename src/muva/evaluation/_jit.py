"""Optional numba kernels (the ``fast`` extra).  Everything has a NumPy fallback.

Only the sparse Jaccard min-sum of re-ranking benefits: it is a triple loop over
(query, shared column, gallery row) whose NumPy form needs ~10 passes over hundreds of
millions of temporaries.  The kernel is compiled on first use (a few seconds, cached on
disk when the package folder is writable), so callers use it only for large work.
"""

from __future__ import annotations

import numpy as np

_KERNEL = None
_TRIED = False


def jaccard_kernel():
    """The compiled kernel, or ``None`` when numba is not installed (or fails to compile)."""
    global _KERNEL, _TRIED
    if _TRIED:
        return _KERNEL
    _TRIED = True
    try:
        import numba  # lazy: optional (the ``fast`` extra), and compiling costs seconds
    except ImportError:
        return None

    @numba.njit(parallel=True, nogil=True, cache=True)
    def minsum(q_indptr, q_indices, q_data, g_indptr, g_indices, g_data, a, b, out):  # pragma: no cover - compiled
        for r in numba.prange(a, b):
            row = out[r - a]
            for p in range(q_indptr[r], q_indptr[r + 1]):
                j = q_indices[p]
                v = q_data[p]
                for t in range(g_indptr[j], g_indptr[j + 1]):
                    w = g_data[t]
                    row[g_indices[t]] += v if v < w else w

    try:
        probe = np.zeros((1, 1))
        z = np.zeros(2, dtype=np.int64)
        minsum(z, z[:0], np.zeros(0, np.float32), z, z[:0], np.zeros(0, np.float32), 0, 1, probe)
    except Exception:  # pragma: no cover - broken numba install
        return None
    _KERNEL = minsum
    return _KERNEL
