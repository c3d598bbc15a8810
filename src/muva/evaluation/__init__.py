"""Evaluation: exact, memory-bounded re-ID metrics, re-ranking, multi-split protocols, tables.

* :func:`evaluate` — CMC / mAP (community or official AP) / mINP from features or a distance
  matrix, in query chunks sized from a memory budget (CPU NumPy or a torch device);
  CUHK03 single-gallery-shot and camera-less modes; optional k-reciprocal re-ranking.
  It returns an :class:`EvalResult` (:mod:`muva.evaluation.result`); the chunk walk is in
  :mod:`muva.evaluation.metrics`, the per-chunk ranking in :mod:`muva.evaluation.ranking`,
  the distance blocks in :mod:`muva.evaluation.distances`.
* :func:`evaluate_splits` / :class:`MultiSplitResult` — mean and std over the 10 splits of
  the small DG targets (VIPeR, PRID, GRID, iLIDS).
* :mod:`muva.evaluation.rerank` — k-reciprocal re-ranking, exact and sparse (no N×N), with
  its two halves :mod:`muva.evaluation.rerank_neighbours` and :mod:`muva.evaluation.rerank_jaccard`.
* :mod:`muva.evaluation.tables` — Markdown / CSV / JSON tables in the paper's layout, CMC curves.
* :mod:`muva.evaluation.io` — the feature-file format read by ``muva evaluate-features``.
* :class:`PerQuery` / :func:`save_per_query` / :func:`load_per_query`
  (:mod:`muva.evaluation.perquery`) — per-query AP / INP / first-match ranks of each split,
  kept in one ``.npz`` per run.
* :mod:`muva.evaluation.stats` — confidence intervals (:class:`Interval`): Student t over
  seeds (:func:`seed_interval`, :func:`paired_seed_difference`) and percentile bootstraps
  over queries (:func:`bootstrap_interval`, :func:`bootstrap_over_seeds`,
  :func:`paired_bootstrap_difference`).

Importing this package loads NumPy only (the command line imports it at start-up); torch
and SciPy are imported when a torch device or tensor is used, when re-ranking runs, or
(SciPy) when a t-interval is computed.
"""

from muva.evaluation.distances import METRICS, EvaluationError
from muva.evaluation.metrics import AP_MODES, evaluate
from muva.evaluation.multisplit import MultiSplitResult, dataset_split, evaluate_splits, summarize_splits
from muva.evaluation.perquery import PerQuery, load_per_query, save_per_query
from muva.evaluation.rerank import RerankConfig, rerank_distances, rerank_features
from muva.evaluation.result import EvalResult
from muva.evaluation.stats import (
    INTERVAL_METRICS,
    Interval,
    bootstrap_interval,
    bootstrap_over_seeds,
    paired_bootstrap_difference,
    paired_seed_difference,
    seed_interval,
)
from muva.evaluation.tables import ResultTable, results_table, write_cmc

__all__ = [
    "AP_MODES",
    "INTERVAL_METRICS",
    "METRICS",
    "EvalResult",
    "EvaluationError",
    "Interval",
    "MultiSplitResult",
    "PerQuery",
    "RerankConfig",
    "ResultTable",
    "bootstrap_interval",
    "bootstrap_over_seeds",
    "evaluate",
    "dataset_split",
    "evaluate_splits",
    "load_per_query",
    "paired_bootstrap_difference",
    "paired_seed_difference",
    "rerank_distances",
    "rerank_features",
    "results_table",
    "save_per_query",
    "seed_interval",
    "summarize_splits",
    "write_cmc",
]
