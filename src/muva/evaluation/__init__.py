"""Evaluation: exact, memory-bounded re-ID metrics, re-ranking, multi-split protocols, tables.

* :func:`evaluate` — CMC / mAP (community or official AP) / mINP from features or a distance
  matrix, in query chunks sized from a memory budget (CPU NumPy or a torch device);
  CUHK03 single-gallery-shot and camera-less modes; optional k-reciprocal re-ranking.
* :func:`evaluate_splits` / :class:`MultiSplitResult` — mean and std over the 10 splits of
  the small DG targets (VIPeR, PRID, GRID, iLIDS).
* :mod:`muva.evaluation.rerank` — k-reciprocal re-ranking, exact and sparse (no N×N).
* :mod:`muva.evaluation.tables` — Markdown / CSV / JSON tables in the paper's layout, CMC curves.
* :mod:`muva.evaluation.io` — the feature-file format read by ``muva evaluate-features``.

Importing this package loads NumPy only; torch is imported when a torch device or tensor is used.
"""

from muva.evaluation.distances import METRICS, EvaluationError
from muva.evaluation.metrics import AP_MODES, EvalResult, evaluate
from muva.evaluation.multisplit import MultiSplitResult, dataset_split, evaluate_splits, summarize_splits
from muva.evaluation.rerank import RerankConfig, rerank_distances, rerank_features
from muva.evaluation.tables import ResultTable, results_table, write_cmc

__all__ = [
    "AP_MODES",
    "METRICS",
    "EvalResult",
    "EvaluationError",
    "MultiSplitResult",
    "RerankConfig",
    "ResultTable",
    "evaluate",
    "dataset_split",
    "evaluate_splits",
    "rerank_distances",
    "rerank_features",
    "results_table",
    "summarize_splits",
    "write_cmc",
]
