"""Exact, memory-bounded re-ID metrics: CMC, mAP (community or official), mINP.

The numbers are those of the community ("Market") protocol every toolbox copies
(as Market-1501's and torchreid's evaluators): rank the gallery by ascending distance, ties in the order of a
*stable* sort (lower gallery index first); drop, per query, the gallery items of the
same identity *and* camera; skip (and count) queries left without a true match.

How it avoids the peers' ~20 GB on MSMT17: the full argsort and match matrix are never
built.  Queries are processed in chunks whose size comes from a memory budget.  For a
chunk, the distance block is sorted by value only (a SIMD sort, no indices), and each
true match's position in the junk-free ranked list is

    rank(j) = #{k : d_k < d_j} + #{k < j : d_k = d_j} − #{junk k ranked before j}

where the first term is a binary search in the sorted row, the second is non-zero only
for exact ties (handled exactly), and the third comes from sorting the handful of
same-identity items of the query by (distance, index).  CMC, AP and mINP follow from
the true matches' ranks alone.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from muva.evaluation.distances import (
    DistanceSource,
    EvaluationError,
    FeatureDistances,
    MatrixDistances,
    chunk_rows,
    is_torch_tensor,
    iter_chunks,
    to_numpy,
)

AP_MODES = ("community", "official")
DEFAULT_CHUNK_MEMORY = 256 << 20  # bytes for the distance blocks of one query chunk


@dataclass
class EvalResult:
    """Metrics of one query/gallery evaluation (fractions in [0, 1], not percentages).

    ``cmc[k-1]`` is Rank-k; ``ap`` and ``first_match`` hold per-query values (``nan`` and
    ``-1`` for queries without a valid true match).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_queries: int
    num_gallery: int
    ap_mode: str = "community"
    metric: str = "distmat"
    single_gallery_shot: bool = False
    rerank: str | None = None
    ap: np.ndarray | None = field(default=None, repr=False)
    first_match: np.ndarray | None = field(default=None, repr=False)
    info: dict = field(default_factory=dict)

    def rank(self, k: int) -> float:
        """Rank-k accuracy (the last CMC value when the curve is shorter than k)."""
        if k < 1:
            raise ValueError("k must be >= 1")
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    @property
    def rank1(self) -> float:
        return self.rank(1)

    @property
    def rank5(self) -> float:
        return self.rank(5)

    @property
    def rank10(self) -> float:
        return self.rank(10)

    @property
    def num_invalid_queries(self) -> int:
        return self.num_queries - self.num_valid_queries

    def to_dict(self, *, cmc: bool = True) -> dict:
        """JSON-ready summary (metrics as fractions)."""
        out = {
            "mAP": float(self.mAP),
            "rank1": self.rank1,
            "rank5": self.rank5,
            "rank10": self.rank10,
            "mINP": float(self.mINP),
            "num_valid_queries": int(self.num_valid_queries),
            "num_queries": int(self.num_queries),
            "num_gallery": int(self.num_gallery),
            "ap_mode": self.ap_mode,
            "metric": self.metric,
            "single_gallery_shot": self.single_gallery_shot,
            "rerank": self.rerank,
        }
        if cmc:
            out["cmc"] = [float(x) for x in self.cmc]
        if self.info:
            out["info"] = dict(self.info)
        return out

    def summary(self) -> str:
        """One line: ``mAP 52.0 | R1 72.1 | R5 … | R10 … | mINP … (valid q/total)``."""
        return (
            f"mAP {100 * self.mAP:.1f} | R1 {100 * self.rank1:.1f} | R5 {100 * self.rank5:.1f} | "
            f"R10 {100 * self.rank10:.1f} | mINP {100 * self.mINP:.1f} "
            f"({self.num_valid_queries}/{self.num_queries} valid queries)"
        )


# --------------------------------------------------------------------------------------
# identity groups of the gallery


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


def _ids(x: Any, n: int, name: str) -> np.ndarray:
    arr = to_numpy(x, name=name).reshape(-1)
    if len(arr) != n:
        raise EvaluationError(f"{name} has {len(arr)} entries but there are {n} rows")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise EvaluationError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _image_keys(q_images: Sequence | None, g_images: Sequence | None, nq: int, ng: int):
    if q_images is None and g_images is None:
        return None, None
    if q_images is None or g_images is None:
        raise EvaluationError("give both q_images and g_images (image identifiers for same-image removal) or neither")
    qa, ga = list(q_images), list(g_images)
    if len(qa) != nq or len(ga) != ng:
        raise EvaluationError(f"q_images/g_images have {len(qa)}/{len(ga)} entries for {nq} queries / {ng} gallery items")
    table: dict = {}
    qk = np.array([table.setdefault(k, len(table)) for k in qa], dtype=np.int64)
    gk = np.array([table.setdefault(k, len(table)) for k in ga], dtype=np.int64)
    return qk, gk


# --------------------------------------------------------------------------------------
# per-chunk ranking


def _num_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _Sorter:
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
        import torch

        r = torch.from_numpy(rows).to(d.device)
        c = torch.from_numpy(cols).to(d.device)
        return d[r, c].cpu().numpy()
    return d[rows, cols]


def _search(s, rows: np.ndarray, slot: np.ndarray, values: np.ndarray, side: str) -> np.ndarray:
    """``searchsorted(s[row], value, side)`` for flat (row-grouped) queries."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if is_torch_tensor(s):
        import torch

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
        import torch

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


# --------------------------------------------------------------------------------------
# the public entry point


def evaluate(
    query_features: Any = None,
    gallery_features: Any = None,
    *,
    distmat: Any = None,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    q_images: Sequence | None = None,
    g_images: Sequence | None = None,
    metric: str = "cosine",
    max_rank: int = 50,
    ap: str = "community",
    single_gallery_shot: bool = False,
    repeats: int = 10,
    seed: int = 0,
    rerank: Any = None,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_memory: int = DEFAULT_CHUNK_MEMORY,
    chunk_size: int | None = None,
    device: Any = "cpu",
    threads: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a ranking with the community re-ID protocol (as Market-1501's and torchreid's evaluators), exactly.

    Give either ``query_features`` and ``gallery_features`` (``metric="cosine"`` — 1 − cosine of
    L2-normalised features — or ``"euclidean"`` — squared Euclidean) or a precomputed
    ``distmat`` (queries × gallery, smaller = more similar).

    * ``q_camids``/``g_camids``: cameras.  Gallery items with the query's identity *and*
      camera are removed from its list.  Without cameras (both ``None``, or both all -1)
      only same-image matches are removed, recognised by ``q_images``/``g_images``
      (any hashable image identifiers, e.g. paths); without those nothing is removed.
    * ``ap``: ``"community"`` (mean precision at the true matches) or ``"official"``
      (the Market-1501 MATLAB trapezoid).
    * ``single_gallery_shot=True``: the classic CUHK03 CMC — one random gallery image per
      identity, ``repeats`` draws (deterministic for a ``seed``, independent of chunking);
      AP is still computed on the full list.
    * ``rerank``: ``None``/``False``, ``"exact"`` or ``"sparse"`` (or a
      :class:`~muva.evaluation.rerank.RerankConfig`) applies k-reciprocal re-ranking with
      ``k1``, ``k2``, ``lambda_value``; needs features.
    * ``chunk_memory`` (bytes) sizes the query chunks (``chunk_size`` forces a row count);
      ``device="cuda"`` computes and sorts distances on the GPU with torch.

    Returns an :class:`EvalResult`.  Raises :class:`EvaluationError` when no query has a
    true match left, or on inconsistent inputs.
    """
    if ap not in AP_MODES:
        raise EvaluationError(f"unknown ap mode {ap!r}; choose one of {', '.join(AP_MODES)}")
    if max_rank < 1:
        raise EvaluationError("max_rank must be >= 1")
    source, rerank_name = _make_source(
        query_features, gallery_features, distmat, metric, device, rerank, k1, k2, lambda_value, chunk_memory, threads, progress
    )
    nq, ng = source.num_query, source.num_gallery
    q_pid = _ids(q_pids, nq, "q_pids")
    g_pid = _ids(g_pids, ng, "g_pids")
    q_cam = g_cam = None
    if (q_camids is None) != (g_camids is None):
        raise EvaluationError("give both q_camids and g_camids, or neither (camera-less data)")
    info: dict = {}
    if q_camids is not None:
        q_cam = _ids(q_camids, nq, "q_camids")
        g_cam = _ids(g_camids, ng, "g_camids")
        if np.all(q_cam == -1) and np.all(g_cam == -1):
            q_cam = g_cam = None
    q_key, g_key = _image_keys(q_images, g_images, nq, ng)
    if q_cam is None:
        info["junk"] = "same image" if q_key is not None else "none (no cameras, no image ids)"
    else:
        info["junk"] = "same identity and camera"
    if ng < max_rank:
        warnings.warn(f"the gallery has only {ng} items; max_rank lowered from {max_rank} to {ng}", stacklevel=2)
        max_rank = ng

    groups = GalleryGroups(g_pid)
    rows = chunk_size or chunk_rows(ng, source.itemsize, chunk_memory)
    rows = max(1, min(rows, nq))
    info["chunk_rows"] = rows
    ap_all = np.full(nq, np.nan)
    inp_all = np.full(nq, np.nan)
    first_all = np.full(nq, -1, dtype=np.int64)
    sgs_hist = np.zeros(max_rank + 1, dtype=np.int64) if single_gallery_shot else None
    sorter = _Sorter(threads)
    from muva.utils.progress import progress_bar

    t_start, t_dist = time.perf_counter(), 0.0

    try:
        with progress_bar("ranking", total=nq, disable=not progress) as advance:
            for a, b in iter_chunks(nq, rows):
                t0 = time.perf_counter()
                d = source.block(a, b)
                t_dist += time.perf_counter() - t0
                if not is_torch_tensor(d) and d.dtype.kind == "f" and np.isnan(d).any():
                    raise EvaluationError(f"distances contain NaN (query rows {a}..{b - 1})")
                s = sorter.sort(d)
                cr = rank_true_matches(
                    d, s, q_pid[a:b],
                    None if q_cam is None else q_cam[a:b], g_cam, groups,
                    None if q_key is None else q_key[a:b], g_key,
                )
                ap_c, inp_c, first_c = chunk_metrics(cr, ap)
                ap_all[a:b], inp_all[a:b], first_all[a:b] = ap_c, inp_c, first_c
                if single_gallery_shot:
                    from muva.evaluation.cuhk03 import single_shot_ranks

                    ranks = single_shot_ranks(d, cr, q_pid[a:b], groups, np.arange(a, b), repeats, seed)
                    sgs_hist += np.bincount(np.minimum(ranks, max_rank), minlength=max_rank + 1)
                del d, s
                advance(b - a)
    finally:
        sorter.close()
        source.close()

    info["seconds_distances"] = t_dist
    info["seconds_ranking"] = time.perf_counter() - t_start - t_dist
    valid = first_all >= 0
    nvalid = int(valid.sum())
    if nvalid == 0:
        raise EvaluationError(
            f"no valid query: none of the {nq} queries has a true match in the gallery "
            f"after removing {info['junk']} matches (check the identities/cameras, or that query "
            "and gallery come from the same dataset)"
        )
    if single_gallery_shot:
        cmc = np.cumsum(sgs_hist)[:max_rank] / (nvalid * repeats)
    else:
        hist = np.bincount(np.minimum(first_all[valid], max_rank), minlength=max_rank + 1)
        cmc = np.cumsum(hist)[:max_rank] / nvalid
    return EvalResult(
        cmc=cmc,
        mAP=float(np.mean(ap_all[valid])),
        mINP=float(np.mean(inp_all[valid])),
        num_valid_queries=nvalid,
        num_queries=nq,
        num_gallery=ng,
        ap_mode=ap,
        metric=metric if distmat is None else "distmat",
        single_gallery_shot=single_gallery_shot,
        rerank=rerank_name,
        ap=ap_all,
        first_match=first_all,
        info=info,
    )


def _make_source(qf, gf, distmat, metric, device, rerank, k1, k2, lam, chunk_memory, threads, progress) -> tuple[DistanceSource, str | None]:
    have_feats = qf is not None or gf is not None
    if distmat is not None and have_feats:
        raise EvaluationError("give either features or distmat, not both")
    if rerank not in (None, False, "none"):
        from muva.evaluation.rerank import RerankConfig, RerankDistances

        cfg = rerank if isinstance(rerank, RerankConfig) else RerankConfig(
            mode="exact" if rerank is True else str(rerank), k1=k1, k2=k2, lambda_value=lam
        )
        if distmat is not None or not have_feats:
            raise EvaluationError(
                "re-ranking needs query and gallery features (it uses query-query and gallery-gallery "
                "neighbours); for precomputed matrices call muva.evaluation.rerank.rerank_distances"
            )
        src = RerankDistances(qf, gf, cfg, metric=metric, chunk_memory=chunk_memory, threads=threads, progress=progress)
        return src, cfg.mode
    if distmat is not None:
        return MatrixDistances(distmat), None
    if qf is None or gf is None:
        raise EvaluationError("give query_features and gallery_features, or distmat")
    return FeatureDistances(qf, gf, metric=metric, device=device), None
