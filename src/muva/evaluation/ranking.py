"""Per-chunk ranking: the position of every true match in the junk-free ranked list.

For a chunk of queries, the distance block is sorted by value only (a SIMD sort, no
indices; :class:`RowSorter`), and each true match's position in the junk-free ranked
list is

    rank(j) = #{k : d_k < d_j} + #{k < j : d_k = d_j} − #{junk k ranked before j}

where the first term is a binary search in the sorted row, the second is non-zero only
for exact ties (handled exactly), and the third comes from sorting the handful of
same-identity items of the query by (distance, index) — :func:`rank_true_matches`.
CMC, AP and mINP follow from the true matches' ranks alone (:func:`chunk_metrics`).

Blocks are NumPy arrays, or torch tensors on a device (then searches and gathers run
there too).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from muva.evaluation.distances import is_torch_tensor


class GalleryGroups:
    """The gallery grouped by identity: ``order`` lists gallery indices sorted by pid (stably)."""

    def __init__(self, g_pids: np.ndarray):
        self.order = np.argsort(g_pids, kind="stable")
        sorted_pids = g_pids[self.order]
        self.pids, self.start, self.count = np.unique(sorted_pids, return_index=True, return_counts=True)

    def lookup(self, q_pids: np.ndarray) -> np.ndarray:
        """Group index of each query identity, -1 when the identity is not in the gallery."""
        pos = np.searchsorted(self.pids, q_pids)
        pos_c = np.minimum(pos, len(self.pids) - 1)
        found = (pos < len(self.pids)) & (self.pids[pos_c] == q_pids)
        return np.where(found, pos_c, -1)

    def members(self, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat ``(row, gallery index)`` of every member of ``group[row]`` (rows in order)."""
        ok = group >= 0
        cnt = np.where(ok, self.count[np.maximum(group, 0)], 0)
        st = np.where(ok, self.start[np.maximum(group, 0)], 0)
        total = int(cnt.sum())
        row = np.repeat(np.arange(len(group)), cnt)
        offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        return row, self.order[np.repeat(st, cnt) + offs]


def _num_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class RowSorter:
    """Sorts distance rows by value: NumPy's SIMD sort over row blocks in threads, or torch.sort."""

    def __init__(self, threads: int | None = None):
        self.threads = threads or _num_threads()
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def sort(self, d):
        if is_torch_tensor(d):
            return d.sort(dim=1).values
        out = np.empty_like(d)
        n = len(d)
        if self.pool is None or n < 2 * self.threads:
            out[...] = d
            out.sort(axis=1)
            return out
        step = math.ceil(n / self.threads)

        def work(a: int) -> None:
            out[a : a + step] = d[a : a + step]
            out[a : a + step].sort(axis=1)

        list(self.pool.map(work, range(0, n, step)))
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _gather(d, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if is_torch_tensor(d):
        import torch  # lazy: reached only with a torch tensor (so torch is loaded); CPU runs stay NumPy-only

        r = torch.from_numpy(rows).to(d.device)
        c = torch.from_numpy(cols).to(d.device)
        return d[r, c].cpu().numpy()
    return d[rows, cols]


def _search(s, rows: np.ndarray, slot: np.ndarray, values: np.ndarray, side: str) -> np.ndarray:
    """``searchsorted(s[row], value, side)`` for flat (row-grouped) queries."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if is_torch_tensor(s):
        import torch  # lazy: reached only with a torch tensor (so torch is loaded); CPU runs stay NumPy-only

        width = int(slot.max()) + 1
        pad = np.full((s.shape[0], width), np.inf, dtype=np.float32 if s.dtype == torch.float32 else np.float64)
        pad[rows, slot] = values
        idx = torch.searchsorted(s, torch.from_numpy(pad).to(device=s.device, dtype=s.dtype), right=(side == "right"))
        return idx.cpu().numpy()[rows, slot].astype(np.int64)
    out = np.empty(len(values), dtype=np.int64)
    bounds = np.flatnonzero(np.diff(rows)) + 1
    starts = np.concatenate(([0], bounds))
    stops = np.concatenate((bounds, [len(rows)]))
    for a, b in zip(starts.tolist(), stops.tolist()):
        out[a:b] = np.searchsorted(s[rows[a]], values[a:b], side=side)
    return out


def _tie_prefix(d, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, block: int = 256) -> np.ndarray:
    """``#{k < col : d[row, k] == value}`` for tied true matches (exact stable tie order)."""
    out = np.zeros(len(rows), dtype=np.int64)
    if is_torch_tensor(d):
        import torch  # lazy: reached only with a torch tensor (so torch is loaded); CPU runs stay NumPy-only

        ar = torch.arange(d.shape[1], device=d.device)
        for a in range(0, len(rows), block):
            r = torch.from_numpy(rows[a : a + block]).to(d.device)
            v = torch.from_numpy(values[a : a + block]).to(device=d.device, dtype=d.dtype)
            c = torch.from_numpy(cols[a : a + block]).to(d.device)
            out[a : a + block] = ((d[r] == v[:, None]) & (ar[None, :] < c[:, None])).sum(1).cpu().numpy()
        return out
    ar = np.arange(d.shape[1])
    for a in range(0, len(rows), block):
        r, v, c = rows[a : a + block], values[a : a + block], cols[a : a + block]
        out[a : a + block] = np.count_nonzero((d[r] == v[:, None]) & (ar[None, :] < c[:, None]), axis=1)
    return out


@dataclass
class ChunkRanks:
    """True matches of a query chunk, grouped by row in ranked order.

    ``row``/``gidx``/``dist``/``rank`` are flat (rows ascending, then rank ascending);
    ``slot`` is the 0-based hit index within the row; ``npos[r]`` the row's true-match count.
    """

    row: np.ndarray
    gidx: np.ndarray
    dist: np.ndarray
    rank: np.ndarray
    slot: np.ndarray
    npos: np.ndarray


def rank_true_matches(
    d,
    s,
    q_pids: np.ndarray,
    q_cams: np.ndarray | None,
    g_cams: np.ndarray | None,
    groups: GalleryGroups,
    q_keys: np.ndarray | None = None,
    g_keys: np.ndarray | None = None,
) -> ChunkRanks:
    """Ranks (0-based, junk removed, stable ties) of every true match of a chunk of queries.

    ``d`` is the chunk's distance block, ``s`` the same block sorted along rows.
    """
    c = len(q_pids)
    row, gidx = groups.members(groups.lookup(q_pids))
    if q_cams is not None:
        junk = g_cams[gidx] == q_cams[row]
    elif q_keys is not None:
        junk = g_keys[gidx] == q_keys[row]
    else:
        junk = np.zeros(len(row), dtype=bool)
    dist = _gather(d, row, gidx)
    order = np.lexsort((gidx, dist, row))
    row, gidx, dist, junk = row[order], gidx[order], dist[order], junk[order]
    # junk items of the same identity ranked before each item (within its row)
    cj = np.cumsum(junk, dtype=np.int64)
    seg_start = np.searchsorted(row, np.arange(c))
    base = np.concatenate(([0], cj))[seg_start]  # junk count before each row's segment
    junk_before = cj - junk - base[row]
    pos = ~junk
    row, gidx, dist, junk_before = row[pos], gidx[pos], dist[pos], junk_before[pos]
    npos = np.bincount(row, minlength=c)
    first = np.concatenate(([0], np.cumsum(npos)))[:-1]
    slot = np.arange(len(row)) - first[row]
    left = _search(s, row, slot, dist, "left")
    right = _search(s, row, slot, dist, "right")
    rank = left - junk_before
    tied = np.flatnonzero(right - left > 1)
    if len(tied):
        rank[tied] += _tie_prefix(d, row[tied], gidx[tied], dist[tied])
    return ChunkRanks(row=row, gidx=gidx, dist=dist, rank=rank, slot=slot, npos=npos)


def chunk_metrics(cr: ChunkRanks, ap_mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row ``(ap, inp, first_rank)`` of a chunk (``nan``/``nan``/``-1`` for rows without a true match)."""
    c = len(cr.npos)
    valid = cr.npos > 0
    rank = cr.rank.astype(np.float64)
    hits = cr.slot.astype(np.float64) + 1.0
    prec = hits / (rank + 1.0)
    if ap_mode == "community":
        contrib = prec
    else:  # official Market-1501 evaluation: trapezoid between the precisions before and at the hit
        old = np.where(cr.rank > 0, (hits - 1.0) / np.maximum(rank, 1.0), 1.0)
        contrib = (old + prec) / 2.0
    ap = np.full(c, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap_sum = np.bincount(cr.row, weights=contrib, minlength=c)
        ap[valid] = ap_sum[valid] / cr.npos[valid]
    last = np.concatenate(([0], np.cumsum(cr.npos)))[1:] - 1
    first = np.concatenate(([0], np.cumsum(cr.npos)))[:-1]
    inp = np.full(c, np.nan)
    first_rank = np.full(c, -1, dtype=np.int64)
    vrows = np.flatnonzero(valid)
    inp[vrows] = cr.npos[vrows] / (cr.rank[last[vrows]] + 1.0)
    first_rank[vrows] = cr.rank[first[vrows]]
    return ap, inp, first_rank
