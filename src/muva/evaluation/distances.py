"""Query-chunked distance rows, on CPU (NumPy/BLAS) or on a torch device.

The evaluator never asks for the whole query × gallery matrix at once: it walks the
queries in chunks and gets one ``chunk × gallery`` block at a time from a
:class:`DistanceSource`.  Three sources exist:

* :class:`FeatureDistances` — from query / gallery features, ``cosine`` (1 − cos of the
  L2-normalised features, the MUVA and community default) or ``euclidean`` (squared
  Euclidean distance of the raw features, as the peers' ``euclidean_squared_distance``);
* :class:`MatrixDistances` — rows of a precomputed distance matrix (NumPy, torch or a
  ``np.memmap``);
* the re-ranking source of :mod:`muva.evaluation.rerank`.

On the CPU everything is NumPy, so evaluating does not even import torch (whose CUDA
build alone costs ~0.7 GB of resident memory); ``device="cuda"`` computes the blocks
with torch on the GPU.  float16 / bfloat16 features are accepted and computed in
float32.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from muva.utils.errors import MuvaError

METRICS = ("cosine", "euclidean")


class EvaluationError(MuvaError, ValueError):
    """Inputs the evaluator cannot use (the message says what to change)."""


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def wants_torch(device: Any) -> bool:
    """True when ``device`` names a non-CPU torch device (``"cuda"``, ``"cuda:1"``, ``torch.device``)."""
    if device is None:
        return False
    return str(device).split(":")[0] not in ("cpu", "")


def to_numpy(x: Any, *, name: str = "array", float_ok: bool = True) -> np.ndarray:
    """Convert a list / NumPy array / torch tensor to NumPy (bfloat16 → float32)."""
    if is_torch_tensor(x):
        import torch  # lazy: reached only with a torch tensor (so torch is loaded); CPU runs stay NumPy-only

        t = x.detach()
        if t.dtype in (torch.bfloat16,):
            t = t.float()
        return t.cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise EvaluationError(f"{name} must be numeric, got an object array")
    return arr


def as_float_features(x: Any, name: str) -> np.ndarray:
    """Features as a 2-D floating NumPy array (float16/bfloat16 are upcast to float32)."""
    arr = to_numpy(x, name=name)
    if arr.ndim != 2:
        raise EvaluationError(f"{name} must be 2-D (rows × dim), got shape {arr.shape}")
    if arr.dtype.kind not in "fc" and arr.dtype.name != "bfloat16":
        arr = arr.astype(np.float32)
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    return arr


def _l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(x.dtype)
    return x / np.maximum(norm, eps)[:, None]


def _is_normalized(x: np.ndarray, tol: float = 2e-6) -> bool:
    # Check every row in slices so a huge gallery does not get a full-size temporary.
    for a in range(0, len(x), 65536):
        block = x[a : a + 65536]
        norm = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        if not np.all(np.abs(norm - 1.0) <= tol):
            return False
    return True


class DistanceSource:
    """Something that yields ``(start, stop, block)`` query-row blocks of a distance matrix."""

    num_query: int
    num_gallery: int
    itemsize: int = 4

    def block(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Free cached state (GPU memory, normalised copies)."""


class MatrixDistances(DistanceSource):
    """Rows of a precomputed ``num_query × num_gallery`` distance matrix (kept in its dtype, float16 upcast)."""

    def __init__(self, distmat: Any):
        if is_torch_tensor(distmat):
            distmat = to_numpy(distmat, name="distmat")
        elif not isinstance(distmat, np.ndarray):
            distmat = np.asarray(distmat)
        if distmat.ndim != 2:
            raise EvaluationError(f"distmat must be 2-D (queries × gallery), got shape {distmat.shape}")
        if distmat.dtype.kind not in "fiu":
            raise EvaluationError(f"distmat must be numeric, got dtype {distmat.dtype}")
        self.distmat = distmat
        self.num_query, self.num_gallery = distmat.shape
        self.dtype = np.float64 if distmat.dtype in (np.float64, np.int64, np.uint64, np.int32) else np.float32
        self.itemsize = np.dtype(self.dtype).itemsize

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.array(self.distmat[start:stop], dtype=self.dtype, order="C", copy=True)


class FeatureDistances(DistanceSource):
    """Distances computed block by block from query / gallery features.

    ``metric="cosine"``: ``1 − q̂·ĝ`` with L2-normalised features (features that are already
    unit-norm are used as they are, without a copy).  ``metric="euclidean"``:
    ``‖q‖² + ‖g‖² − 2 q·g`` on the raw features.
    """

    def __init__(self, query_features: Any, gallery_features: Any, *, metric: str = "cosine", device: Any = "cpu"):
        if metric not in METRICS:
            raise EvaluationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.metric = metric
        self.device = device
        self.use_torch = wants_torch(device)
        if self.use_torch:
            self._init_torch(query_features, gallery_features)
        else:
            self._init_numpy(query_features, gallery_features)

    # -- NumPy / BLAS ------------------------------------------------------------------
    def _init_numpy(self, qf: Any, gf: Any) -> None:
        q = as_float_features(qf, "query_features")
        g = as_float_features(gf, "gallery_features")
        if q.shape[1] != g.shape[1]:
            raise EvaluationError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
        dtype = np.float32
        q = q.astype(dtype, copy=False)
        g = g.astype(dtype, copy=False)
        if self.metric == "cosine":
            if not _is_normalized(q):
                q = _l2_normalize(q)
            if not _is_normalized(g):
                g = _l2_normalize(g)
            self.g_sq = None
        else:
            self.g_sq = np.einsum("ij,ij->i", g, g).astype(dtype)
        self.q, self.g = q, g
        self.gT = g.T
        self.num_query, self.num_gallery = len(q), len(g)
        self.itemsize = 4

    # -- torch (GPU) -------------------------------------------------------------------
    def _init_torch(self, qf: Any, gf: Any) -> None:
        import torch  # lazy: only for a torch device; the CPU path never imports torch (module docstring)

        def prep(x: Any, name: str):
            t = x if is_torch_tensor(x) else torch.from_numpy(np.ascontiguousarray(as_float_features(x, name)))
            if t.ndim != 2:
                raise EvaluationError(f"{name} must be 2-D (rows × dim), got shape {tuple(t.shape)}")
            return t.to(device=self.device, dtype=torch.float32)

        q = prep(qf, "query_features")
        g = prep(gf, "gallery_features")
        if q.shape[1] != g.shape[1]:
            raise EvaluationError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, p=2, dim=1)
            g = torch.nn.functional.normalize(g, p=2, dim=1)
            self.g_sq = None
        else:
            self.g_sq = (g * g).sum(1)
        self.q, self.g = q, g
        self.num_query, self.num_gallery = q.shape[0], g.shape[0]
        self.itemsize = 4

    def block(self, start: int, stop: int):
        """Distances of queries ``start:stop`` to the whole gallery (NumPy, or a torch tensor on the device)."""
        q = self.q[start:stop]
        if self.use_torch:
            d = q @ self.g.T
            if self.metric == "cosine":
                return d.neg_().add_(1.0)
            return d.mul_(-2.0).add_((q * q).sum(1)[:, None]).add_(self.g_sq[None, :])
        d = q @ self.gT
        if self.metric == "cosine":
            np.subtract(1.0, d, out=d)
            return d
        d *= -2.0
        d += np.einsum("ij,ij->i", q, q)[:, None]
        d += self.g_sq[None, :]
        return d

    def close(self) -> None:
        self.q = self.g = self.gT = self.g_sq = None


def iter_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)`` in steps of ``size``."""
    for a in range(0, n, size):
        yield a, min(n, a + size)


def chunk_rows(num_gallery: int, itemsize: int, memory: int, factor: float = 2.5, minimum: int = 1) -> int:
    """Query rows per chunk so that ``factor`` blocks of ``rows × num_gallery`` fit in ``memory`` bytes."""
    per_row = max(1.0, num_gallery * itemsize * factor)
    return max(minimum, int(memory // per_row))
