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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from muva.evaluation.distances import (
    DistanceSource,
    EvaluationError,
    as_float_features,
    chunk_rows,
    iter_chunks,
    to_numpy,
)

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


# --------------------------------------------------------------------------------------
# original-distance providers: rows of O, pair values of O, query × gallery blocks of O


class _FeatureOD:
    """Rows of the normalised squared distance O, computed from features with torch (CPU)."""

    def __init__(self, qf: Any, gf: Any, metric: str, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        q = as_float_features(qf, "query_features").astype(np.float32, copy=False)
        g = as_float_features(gf, "gallery_features").astype(np.float32, copy=False)
        if q.shape[1] != g.shape[1]:
            raise EvaluationError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate([q, g])))
        if metric == "cosine":
            x = torch.nn.functional.normalize(x, p=2, dim=1)
            self.sq = None
        elif metric == "euclidean":
            self.sq = (x * x).sum(1)
        else:
            raise EvaluationError(f"unknown metric {metric!r}")
        self.x = x
        self.metric = metric
        self.nq, self.ng = len(q), len(g)
        self.n = self.nq + self.ng
        self.rowmax = np.zeros(self.n, dtype=np.float32)

    def _dist(self, a: int, b: int, cols: slice):
        xa = self.x[a:b]
        d = xa @ self.x[cols].T
        if self.metric == "cosine":
            return d.neg_().add_(1.0)
        return d.mul_(-2.0).add_((xa * xa).sum(1)[:, None]).add_(self.sq[cols][None, :])

    def rows(self, a: int, b: int):
        """O[a:b, :] as a torch tensor (also records the row maxima)."""
        d = self._dist(a, b, slice(0, self.n)).square_()
        m = d.max(1).values
        self.rowmax[a:b] = m.numpy()
        return d.div_(m[:, None])

    def neighbours(self, width: int, exact: bool, block: int, progress: bool = False) -> np.ndarray:
        """The ``width`` nearest images of every image, from blocks of the upper triangle.

        Each ``X_I · X_Jᵀ`` block (J ≥ I) serves rows I and, transposed, rows J, so the
        N × N products cost half of a row-by-row pass.  Per row a running list of the
        ``width + 8`` smallest squared distances and the running row maximum are kept;
        O = d² / max is applied at the end (division by a positive number keeps the order).
        With ``exact`` a row whose candidate list could hide an O-tie at the cut is redone
        from its full row.  Sets ``self.rowmax`` and the neighbours' O values.
        """
        import torch

        from muva.utils.progress import progress_bar

        n = self.n
        width = min(width, n)
        keep = min(width + 8, n)
        cand_v = torch.full((n, keep), float("inf"))
        cand_i = torch.full((n, keep), -1, dtype=torch.int64)
        rowmax = torch.full((n,), float("-inf"))

        def update(a: int, b: int, c0: int, d) -> None:
            rowmax[a:b] = torch.maximum(rowmax[a:b], d.max(1).values)
            v, ix = torch.topk(d, min(keep, d.shape[1]), dim=1, largest=False, sorted=False)
            allv = torch.cat([cand_v[a:b], v], 1)
            alli = torch.cat([cand_i[a:b], ix + c0], 1)
            v2, o = torch.topk(allv, keep, dim=1, largest=False, sorted=False)
            cand_v[a:b], cand_i[a:b] = v2, torch.gather(alli, 1, o)

        starts = list(range(0, n, block))
        with progress_bar("re-ranking: neighbours", total=len(starts) * (len(starts) + 1) // 2, disable=not progress) as advance:
            for bi, a in enumerate(starts):
                b = min(n, a + block)
                for c0 in starts[bi:]:
                    c1 = min(n, c0 + block)
                    d = self._dist(a, b, slice(c0, c1)).square_()
                    update(a, b, c0, d)
                    if c0 != a:
                        update(c0, c1, a, d.T.contiguous())
                    advance(1)
        self.rowmax = rowmax.numpy().astype(np.float32)
        od = (cand_v / rowmax[:, None]).numpy()
        vals, idx = _stable_order(od, cand_i.numpy())
        if exact and keep < n:
            redo = np.flatnonzero(vals[:, keep - 1] <= vals[:, width - 1])
            for r in redo.tolist():  # candidates exhausted by a tie at the cut: take the full row
                row = (self._dist(r, r + 1, slice(0, n)).square_() / rowmax[r]).numpy()[0]
                sel = np.argsort(row, kind="stable")[:keep]
                vals[r], idx[r] = row[sel], sel
        self.nb_vals = np.ascontiguousarray(vals[:, :width])
        self.nb_idx = np.ascontiguousarray(idx[:, :width])
        return self.nb_idx

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """O[i, j] for flat index arrays (after the neighbour pass has seen every row).

        Pairs among a row's stored neighbours take the stored values; the others are
        recomputed from the features.
        """
        import torch

        out = np.empty(len(i), dtype=np.float32)
        todo = np.arange(len(i))
        if getattr(self, "nb_idx", None) is not None:
            hit = self.nb_idx[i] == j[:, None]
            found = hit.any(1)
            out[found] = self.nb_vals[i[found], hit[found].argmax(1)]
            todo = np.flatnonzero(~found)
        i_all, j_all = i, j
        i, j = i_all[todo], j_all[todo]
        res = np.empty(len(i), dtype=np.float32)
        for a in range(0, len(i), 8192):
            ii = torch.from_numpy(i[a : a + 8192])
            jj = torch.from_numpy(j[a : a + 8192])
            dot = (self.x[ii] * self.x[jj]).sum(1)
            if self.metric == "cosine":
                d = 1.0 - dot
            else:
                d = self.sq[ii] + self.sq[jj] - 2.0 * dot
            res[a : a + 8192] = (d.square() / torch.from_numpy(self.rowmax[i[a : a + 8192]])).numpy()
        out[todo] = res
        return out

    def query_gallery(self, a: int, b: int) -> np.ndarray:
        d = self._dist(a, b, slice(self.nq, self.n)).square_()
        return d.div_(torch_from(self.rowmax[a:b])[:, None]).numpy()


def torch_from(x: np.ndarray):
    import torch

    return torch.from_numpy(x)


class _DenseOD:
    """The reference construction on dense q-g, q-q and g-g matrices (column-max normalised)."""

    def __init__(self, q_g: Any, q_q: Any, g_g: Any):
        q_g, q_q, g_g = (to_numpy(m, name=n) for m, n in ((q_g, "q_g"), (q_q, "q_q"), (g_g, "g_g")))
        nq, ng = q_g.shape
        if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
            raise EvaluationError(f"shapes q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape} do not fit together")
        full = np.block([[q_q, q_g], [q_g.T, g_g]])
        full = np.power(full, 2).astype(np.float32)
        self.od = np.ascontiguousarray(np.transpose(full / np.max(full, axis=0)))
        self.nq, self.ng, self.n = nq, ng, nq + ng

    def rows(self, a: int, b: int):
        return torch_from(self.od[a:b].copy())

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.od[i, j]

    def query_gallery(self, a: int, b: int) -> np.ndarray:
        return self.od[a:b, self.nq :].copy()


# --------------------------------------------------------------------------------------
# the algorithm


def _stable_order(vals: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row of (vals, idx) by (value, index)."""
    o = np.argsort(idx, axis=1, kind="stable")
    idx, vals = np.take_along_axis(idx, o, 1), np.take_along_axis(vals, o, 1)
    o = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(vals, o, 1), np.take_along_axis(idx, o, 1)


def nearest_neighbours(provider, width: int, exact: bool, chunk: int, progress: bool = False) -> np.ndarray:
    """``width`` nearest images of every image in ascending O (stable ties when ``exact``)."""
    import torch

    from muva.utils.progress import progress_bar

    n = provider.n
    width = min(width, n)
    nb = np.empty((n, width), dtype=np.int64)
    extra = 1 if exact and width < n else 0
    with progress_bar("re-ranking: neighbours", total=n, disable=not progress) as advance:
        for a, b in iter_chunks(n, chunk):
            od = provider.rows(a, b)
            vals, idx = torch.topk(od, width + extra, dim=1, largest=False, sorted=True)
            vals, idx = vals.numpy(), idx.numpy()
            if exact:
                if extra:
                    boundary = np.flatnonzero(vals[:, width - 1] == vals[:, width])
                    for r in boundary.tolist():  # a tie straddles the cut: take the lowest indices
                        row = od[r].numpy()
                        sel = np.argsort(row, kind="stable")[:width]
                        vals[r, :width], idx[r, :width] = row[sel], sel
                vals, idx = _stable_order(vals[:, :width], idx[:, :width])
            nb[a:b] = idx[:, :width]
            del od
            advance(b - a)
    return nb


def _reciprocal(nb: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Padded (-1) k-reciprocal sets: ``j ∈ N(i, k+1)`` with ``i ∈ N(j, k+1)``, in N(i) order."""
    n = len(nb)
    kk = min(k + 1, nb.shape[1])
    fwd = nb[:, :kk]
    out = np.full((n, kk), -1, dtype=np.int64)
    for a, b in iter_chunks(n, chunk):
        f = fwd[a:b]
        back = fwd[f]  # (c, kk, kk)
        ok = (back == np.arange(a, b)[:, None, None]).any(-1)
        out[a:b] = np.where(ok, f, -1)
    return out


def _compact(sets: np.ndarray) -> np.ndarray:
    """Move the valid (>= 0) entries of each row to the front, keeping their order."""
    key = np.argsort(sets < 0, axis=1, kind="stable")
    return np.take_along_axis(sets, key, 1)


def expansion_sets(nb: np.ndarray, k1: int, k_half: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of the expanded k-reciprocal set of every image (indices sorted)."""
    n = len(nb)
    R = _compact(_reciprocal(nb, k1))
    Rh = _compact(_reciprocal(nb, k_half))
    rh_size = (Rh >= 0).sum(1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    pieces = []
    for a, b in iter_chunks(n, chunk):
        r = R[a:b]  # (c, K)
        cand = np.where(r >= 0, r, 0)
        rh = Rh[cand]  # (c, K, Kh)
        inr = ((rh[..., None] == r[:, None, None, :]) & (rh[..., None] >= 0)).any(-1).sum(-1)
        cond = (inr > 2.0 / 3 * rh_size[cand]) & (r >= 0)
        add = np.where(cond[..., None], rh, -1).reshape(b - a, -1)
        allset = np.sort(np.concatenate([r, add], axis=1), axis=1)
        dup = np.zeros_like(allset, dtype=bool)
        dup[:, 1:] = allset[:, 1:] == allset[:, :-1]
        keep = (allset >= 0) & ~dup
        indptr[a + 1 : b + 1] = keep.sum(1)
        pieces.append(allset[keep])
    np.cumsum(indptr, out=indptr)
    return indptr, np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def build_v(provider, nb: np.ndarray, cfg: RerankConfig):
    """The (query-expanded) V matrix as SciPy CSR float32, N × N."""
    import scipy.sparse as sp

    n = provider.n
    indptr, indices = expansion_sets(nb, cfg.k1, cfg.k_half)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    w = np.exp(-provider.pairs(rows, indices)).astype(np.float32)
    sums = np.bincount(rows, weights=w, minlength=n).astype(np.float32)  # rows with no set stay empty
    w = (w / sums[rows]).astype(np.float32)
    V = sp.csr_matrix((w, indices, indptr), shape=(n, n))
    k2 = min(cfg.k2, nb.shape[1])
    if k2 != 1:
        A = sp.csr_matrix(
            (np.full(n * k2, 1.0 / k2, dtype=np.float32), nb[:, :k2].reshape(-1), np.arange(0, n * k2 + 1, k2)), shape=(n, n)
        )
        V = (A @ V).tocsr()
    V.sort_indices()
    return V


def _jaccard_block(Vq, Vg_csc, a: int, b: int, ng: int, max_pairs: int = 4_000_000, use_jit: bool | None = None) -> np.ndarray:
    """``s[i, g] = Σ_j min(V[i, j], V[g, j])`` for query rows a..b (float64, (b−a) × ng).

    ``use_jit``: ``None`` uses the numba kernel (``fast`` extra) when installed and the block
    is large; ``True``/``False`` force it on/off (``True`` falls back to NumPy without numba).
    """
    col_nnz = np.diff(Vg_csc.indptr)
    if use_jit is not False:
        from muva.evaluation._jit import jaccard_kernel

        work = int(col_nnz[Vq.indices[Vq.indptr[a] : Vq.indptr[b]]].sum())
        kernel = jaccard_kernel() if (use_jit or work > 2_000_000) else None
        if kernel is not None:
            out2 = np.zeros((b - a, ng), dtype=np.float64)
            kernel(Vq.indptr, Vq.indices, Vq.data, Vg_csc.indptr, Vg_csc.indices, Vg_csc.data, a, b, out2)
            return out2
    out = np.zeros((b - a) * ng, dtype=np.float64)
    r0 = a
    while r0 < b:
        # grow the sub-chunk until it would exceed max_pairs contributions
        r1 = r0 + 1
        cnt = int(col_nnz[Vq.indices[Vq.indptr[r0] : Vq.indptr[r1]]].sum())
        while r1 < b:
            nxt = int(col_nnz[Vq.indices[Vq.indptr[r1] : Vq.indptr[r1 + 1]]].sum())
            if cnt + nxt > max_pairs:
                break
            cnt += nxt
            r1 += 1
        s, e = Vq.indptr[r0], Vq.indptr[r1]
        qrow = np.repeat(np.arange(r0, r1), np.diff(Vq.indptr[r0 : r1 + 1])) - a
        j, v = Vq.indices[s:e], Vq.data[s:e]
        n_per = col_nnz[j]
        starts = Vg_csc.indptr[j]
        tot = int(n_per.sum())
        offs = np.arange(tot) - np.repeat(np.cumsum(n_per) - n_per, n_per)
        pos = np.repeat(starts, n_per) + offs
        g = Vg_csc.indices[pos]
        m = np.minimum(np.repeat(v, n_per), Vg_csc.data[pos]).astype(np.float64)
        out += np.bincount(np.repeat(qrow, n_per) * ng + g, weights=m, minlength=len(out))
        r0 = r1
    return out.reshape(b - a, ng)


class RerankDistances(DistanceSource):
    """Re-ranked query × gallery distances, one query chunk at a time (for :func:`evaluate`)."""

    def __init__(self, qf: Any, gf: Any, cfg: RerankConfig, *, metric: str = "cosine", chunk_memory: int = 256 << 20,
                 threads: int | None = None, progress: bool = False, provider: Any = None):
        self.cfg = cfg
        self.provider = provider if provider is not None else _FeatureOD(qf, gf, metric, threads)
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
        V = build_v(p, self.nb, cfg)
        self.Vq = V[: p.nq]
        self.Vg = V[p.nq :].tocsc()
        self.Vg.sort_indices()

    def block(self, start: int, stop: int) -> np.ndarray:
        lam = np.float32(self.cfg.lambda_value)
        s = _jaccard_block(self.Vq, self.Vg, start, stop, self.num_gallery).astype(np.float32)
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
    cfg = RerankConfig("exact", k1, k2, lambda_value)
    src = RerankDistances(None, None, cfg, provider=_DenseOD(q_g, q_q, g_g))
    return np.concatenate([src.block(a, b) for a, b in iter_chunks(src.num_query, 512)])
