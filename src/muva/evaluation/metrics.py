"""Exact, memory-bounded re-ID metrics: CMC, mAP (community or official), mINP — :func:`evaluate`.

The numbers are those of the community ("Market") protocol every toolbox copies
(as Market-1501's and torchreid's evaluators): rank the gallery by ascending distance, ties in the order of a
*stable* sort (lower gallery index first); drop, per query, the gallery items of the
same identity *and* camera; skip (and count) queries left without a true match.

How it avoids the peers' ~20 GB on MSMT17: the full argsort and match matrix are never
built.  Queries are processed in chunks whose size comes from a memory budget; each
chunk's distance block comes from a :class:`~muva.evaluation.distances.DistanceSource`
(features, a precomputed matrix, or re-ranking) and is ranked by
:mod:`muva.evaluation.ranking`, which finds each true match's position in the junk-free
list without sorting indices.  This module checks the inputs, walks the chunks and
reduces the per-query values to an :class:`~muva.evaluation.result.EvalResult`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np

from muva.evaluation.cuhk03 import single_shot_ranks
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
from muva.evaluation.ranking import GalleryGroups, RowSorter, chunk_metrics, rank_true_matches
from muva.evaluation.rerank import RerankConfig, RerankDistances
from muva.evaluation.result import EvalResult
from muva.utils.progress import progress_bar

AP_MODES = ("community", "official")
DEFAULT_CHUNK_MEMORY = 256 << 20  # bytes for the distance blocks of one query chunk


# --------------------------------------------------------------------------------------
# input checks


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
    sorter = RowSorter(threads)
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
        inp=inp_all,
        info=info,
    )


def _make_source(qf, gf, distmat, metric, device, rerank, k1, k2, lam, chunk_memory, threads, progress) -> tuple[DistanceSource, str | None]:
    have_feats = qf is not None or gf is not None
    if distmat is not None and have_feats:
        raise EvaluationError("give either features or distmat, not both")
    if rerank not in (None, False, "none"):
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
