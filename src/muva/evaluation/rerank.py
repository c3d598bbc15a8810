"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without dense (q+g)² arrays.

The reference algorithm, on the N = q + g images (queries first):

1. ``O[i, j]`` = squared original distance divided by the maximum of its row (the peers
   divide by the column maximum and transpose — the same for symmetric distances);
2. ``N(i, k)`` = the k nearest images of i (i itself first), in ascending ``O[i, ·]``;
   ``R(i, k)`` = the k-reciprocal ones: ``j ∈ N(i, k+1)`` with ``i ∈ N(j, k+1)``;
3. expansion: for each ``c ∈ R(i, k1)``, add ``R(c, round(k1/2))`` when more than 2/3 of
   it lies in ``R(i, k1)``; ``V[i, j] = exp(−O[i, j])`` over the expanded set, normalised;
4. local query expansion: ``V[i] ← mean of V[j] over the k2 nearest j of i``;
5. Jaccard distance ``J[i, g] = 1 − s / (2 − s)`` with ``s = Σ_j min(V[i, j], V[g, j])``;
6. final distance ``λ·O[i, g] + (1 − λ)·J[i, g]`` for queries i and gallery g.

Everything here is kept sparse: the neighbour lists (N × (k1+1)), V (a few dozen
non-zeros per row, SciPy CSR) and, per query chunk, one ``chunk × gallery`` block.  The
original-distance rows are produced chunk by chunk from the features and never stored.

Modes:

* ``"exact"`` — the neighbour lists follow a *stable* ascending order (ties by index) and
  boundary ties are resolved exactly, so the lists equal those of a full stable argsort;
  :func:`rerank_distances` also runs it on dense q-g / q-q / g-g matrices exactly as the
  reference function does (column-max normalisation included).
* ``"sparse"`` — neighbour lists straight from a top-k selection (ties in arbitrary
  order); the same result up to ties, a little faster.

The work is split in three modules: this one (the options, the chunked distance source
used by :func:`~muva.evaluation.evaluate`, and the two dense entry points),
:mod:`muva.evaluation.rerank_neighbours` (steps 1–2, torch) and
:mod:`muva.evaluation.rerank_jaccard` (steps 3–5, NumPy / SciPy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from muva.evaluation.distances import DistanceSource, EvaluationError, chunk_rows, iter_chunks
from muva.evaluation.rerank_jaccard import build_v, jaccard_block

MODES = ("exact", "sparse")


@dataclass
class RerankConfig:
    """k-reciprocal re-ranking options (the paper's defaults: k1 = 20, k2 = 6, λ = 0.3)."""

    mode: str = "exact"
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EvaluationError(f"unknown re-ranking mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.k1 < 1 or self.k2 < 1:
            raise EvaluationError(f"k1 and k2 must be >= 1 (got k1={self.k1}, k2={self.k2})")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise EvaluationError(f"lambda_value must be in [0, 1] (got {self.lambda_value})")

    @property
    def k_half(self) -> int:
        return int(np.around(self.k1 / 2.0))


class RerankDistances(DistanceSource):
    """Re-ranked query × gallery distances, one query chunk at a time (for :func:`evaluate`)."""

    def __init__(self, qf: Any, gf: Any, cfg: RerankConfig, *, metric: str = "cosine", chunk_memory: int = 256 << 20,
                 threads: int | None = None, progress: bool = False, provider: Any = None):
        # lazy: the neighbour half of re-ranking is torch; plain evaluation (and importing
        # muva.evaluation) stays NumPy-only
        from muva.evaluation.rerank_neighbours import FeatureOD, nearest_neighbours

        self.cfg = cfg
        self.provider = provider if provider is not None else FeatureOD(qf, gf, metric, threads)
        p = self.provider
        self.num_query, self.num_gallery = p.nq, p.ng
        self.itemsize = 8  # a block holds float64 Jaccard sums + float32 distances: size chunks for it
        width = max(cfg.k1 + 1, cfg.k2)
        if hasattr(p, "neighbours"):
            block = int(min(4096, max(256, math.isqrt(max(1, chunk_memory // 12)))))
            self.nb = p.neighbours(width, cfg.mode == "exact", block, progress)
        else:
            rows = chunk_rows(p.n, 4, chunk_memory, factor=2.0)
            self.nb = nearest_neighbours(p, width, cfg.mode == "exact", rows, progress)
        V = build_v(p, self.nb, cfg.k1, cfg.k_half, cfg.k2)
        self.Vq = V[: p.nq]
        self.Vg = V[p.nq :].tocsc()
        self.Vg.sort_indices()

    def block(self, start: int, stop: int) -> np.ndarray:
        lam = np.float32(self.cfg.lambda_value)
        s = jaccard_block(self.Vq, self.Vg, start, stop, self.num_gallery).astype(np.float32)
        jac = np.float32(1.0) - s / (np.float32(2.0) - s)
        od = self.provider.query_gallery(start, stop)
        return (jac * (np.float32(1.0) - lam) + od * lam).astype(np.float32, copy=False)


def rerank_features(query_features: Any, gallery_features: Any, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                    mode: str = "exact", metric: str = "cosine", chunk_memory: int = 256 << 20, progress: bool = False) -> np.ndarray:
    """Dense re-ranked q × g distance matrix from features (for small sets; :func:`evaluate`
    with ``rerank=`` streams it chunk by chunk instead)."""
    src = RerankDistances(query_features, gallery_features, RerankConfig(mode, k1, k2, lambda_value), metric=metric,
                          chunk_memory=chunk_memory, progress=progress)
    rows = chunk_rows(src.num_gallery, 4, chunk_memory, factor=4.0)
    return np.concatenate([src.block(a, b) for a, b in iter_chunks(src.num_query, rows)])


def rerank_distances(q_g: Any, q_q: Any, g_g: Any, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Exact re-ranking of dense distance matrices, the reference function's signature
    ``(q_g, q_q, g_g) → final q × g distances`` (holds the (q+g)² original distances)."""
    from muva.evaluation.rerank_neighbours import DenseOD  # lazy: torch, as in RerankDistances

    cfg = RerankConfig("exact", k1, k2, lambda_value)
    src = RerankDistances(None, None, cfg, provider=DenseOD(q_g, q_q, g_g))
    return np.concatenate([src.block(a, b) for a, b in iter_chunks(src.num_query, 512)])
