"""k-reciprocal re-ranking, steps 1–2: the original distances O and every image's nearest neighbours.

On the N = q + g images (queries first), ``O[i, j]`` is the squared original distance
divided by the maximum of its row, and ``N(i, k)`` the k nearest images of i in ascending
``O[i, ·]``.  Two providers of O exist, each with ``rows`` (O[a:b, :] as a tensor),
``pairs`` (O at flat index pairs) and ``query_gallery`` (a query × gallery block):

* :class:`FeatureOD` — from features, never stored: its :meth:`FeatureOD.neighbours`
  walks blocks of the upper triangle (half the products of a row-by-row pass);
* :class:`DenseOD` — the reference construction on dense q-g / q-q / g-g matrices
  (column-max normalisation), walked row by row by :func:`nearest_neighbours`.

With ``exact`` the lists follow a *stable* ascending order (ties by index) and ties at
the cut are resolved exactly, so they equal those of a full stable argsort.  This half of
re-ranking is torch (CPU matrix products and top-k); :mod:`muva.evaluation.rerank` loads
it only when re-ranking runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from muva.evaluation.distances import EvaluationError, as_float_features, iter_chunks, to_numpy
from muva.utils.progress import progress_bar


def _stable_order(vals: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row of (vals, idx) by (value, index)."""
    o = np.argsort(idx, axis=1, kind="stable")
    idx, vals = np.take_along_axis(idx, o, 1), np.take_along_axis(vals, o, 1)
    o = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(vals, o, 1), np.take_along_axis(idx, o, 1)


class FeatureOD:
    """Rows of the normalised squared distance O, computed from features with torch (CPU)."""

    def __init__(self, qf: Any, gf: Any, metric: str, threads: int | None):
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
        return d.div_(torch.from_numpy(self.rowmax[a:b])[:, None]).numpy()


class DenseOD:
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
        return torch.from_numpy(self.od[a:b].copy())

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.od[i, j]

    def query_gallery(self, a: int, b: int) -> np.ndarray:
        return self.od[a:b, self.nq :].copy()


def nearest_neighbours(provider, width: int, exact: bool, chunk: int, progress: bool = False) -> np.ndarray:
    """``width`` nearest images of every image in ascending O (stable ties when ``exact``)."""
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

