"""k-reciprocal re-ranking, steps 3–5: k-reciprocal sets, the encoding V and Jaccard sums.

From the neighbour lists of :mod:`muva.evaluation.rerank_neighbours`:

* ``R(i, k)`` — the k-reciprocal neighbours, ``j ∈ N(i, k+1)`` with ``i ∈ N(j, k+1)``;
* expansion — for each ``c ∈ R(i, k1)``, ``R(c, round(k1/2))`` joins the set when more
  than 2/3 of it lies in ``R(i, k1)`` (:func:`expansion_sets`);
* ``V[i, j] = exp(−O[i, j])`` over the expanded set, normalised, then averaged over the
  k2 nearest images (local query expansion) — a SciPy CSR matrix with a few dozen
  non-zeros per row (:func:`build_v`);
* ``s[i, g] = Σ_j min(V[i, j], V[g, j])`` for a chunk of queries (:func:`jaccard_block`),
  with the optional numba kernel of :mod:`muva.evaluation._jit` for large blocks.

Everything is sparse or chunked: no N × N array is built.
"""

from __future__ import annotations

import numpy as np

from muva.evaluation._jit import jaccard_kernel
from muva.evaluation.distances import iter_chunks


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


def build_v(provider, nb: np.ndarray, k1: int, k_half: int, k2: int):
    """The (query-expanded) V matrix as SciPy CSR float32, N × N.

    ``provider`` gives the O values (``pairs``), ``nb`` the neighbour lists (N × ≥ k1+1);
    ``k_half`` is the k of the expansion candidates' reciprocal sets (``round(k1 / 2)``)."""
    # lazy: `muva --help` imports this package (for its command module) and must not load SciPy
    import scipy.sparse as sp

    n = provider.n
    indptr, indices = expansion_sets(nb, k1, k_half)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    w = np.exp(-provider.pairs(rows, indices)).astype(np.float32)
    sums = np.bincount(rows, weights=w, minlength=n).astype(np.float32)  # rows with no set stay empty
    w = (w / sums[rows]).astype(np.float32)
    V = sp.csr_matrix((w, indices, indptr), shape=(n, n))
    k2 = min(k2, nb.shape[1])
    if k2 != 1:
        A = sp.csr_matrix(
            (np.full(n * k2, 1.0 / k2, dtype=np.float32), nb[:, :k2].reshape(-1), np.arange(0, n * k2 + 1, k2)), shape=(n, n)
        )
        V = (A @ V).tocsr()
    V.sort_indices()
    return V


def jaccard_block(Vq, Vg_csc, a: int, b: int, ng: int, max_pairs: int = 4_000_000, use_jit: bool | None = None) -> np.ndarray:
    """``s[i, g] = Σ_j min(V[i, j], V[g, j])`` for query rows a..b (float64, (b−a) × ng).

    ``use_jit``: ``None`` uses the numba kernel (``fast`` extra) when installed and the block
    is large; ``True``/``False`` force it on/off (``True`` falls back to NumPy without numba).
    """
    col_nnz = np.diff(Vg_csc.indptr)
    if use_jit is not False:
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
