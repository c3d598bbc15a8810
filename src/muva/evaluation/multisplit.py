"""Multi-split targets (DG Protocol 1: VIPeR, PRID, GRID, iLIDS): mean and std over the splits.

Each split is one query/gallery evaluation; :func:`evaluate_splits` runs them and
:class:`MultiSplitResult` reports the mean (and the population standard deviation,
``ddof=0``) of every metric and of the CMC curve.  A ``MultiSplitResult`` has the same
``mAP`` / ``rank1`` / ``cmc`` attributes as an :class:`EvalResult` (the means), so the
table helpers accept either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from muva.evaluation.distances import EvaluationError
from muva.evaluation.metrics import evaluate
from muva.evaluation.result import EvalResult

METRIC_NAMES = ("mAP", "rank1", "rank5", "rank10", "mINP")


@dataclass
class MultiSplitResult:
    """Mean / std of each metric over several splits (fractions in [0, 1])."""

    results: list[EvalResult]
    mean: dict[str, float]
    std: dict[str, float]
    cmc: np.ndarray
    cmc_std: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def num_splits(self) -> int:
        return len(self.results)

    @property
    def mAP(self) -> float:
        return self.mean["mAP"]

    @property
    def mINP(self) -> float:
        return self.mean["mINP"]

    @property
    def rank1(self) -> float:
        return self.mean["rank1"]

    @property
    def rank5(self) -> float:
        return self.mean["rank5"]

    @property
    def rank10(self) -> float:
        return self.mean["rank10"]

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    @property
    def num_valid_queries(self) -> int:
        return int(sum(r.num_valid_queries for r in self.results))

    @property
    def num_queries(self) -> int:
        return int(sum(r.num_queries for r in self.results))

    def to_dict(self, *, cmc: bool = True) -> dict:
        out: dict[str, Any] = {k: float(v) for k, v in self.mean.items()}
        out["std"] = {k: float(v) for k, v in self.std.items()}
        out["num_splits"] = self.num_splits
        out["splits"] = [r.to_dict(cmc=False) for r in self.results]
        if cmc:
            out["cmc"] = [float(x) for x in self.cmc]
            out["cmc_std"] = [float(x) for x in self.cmc_std]
        return out

    def summary(self) -> str:
        parts = [f"{k} {100 * self.mean[k]:.1f}±{100 * self.std[k]:.1f}" for k in METRIC_NAMES]
        return " | ".join(parts) + f" ({self.num_splits} splits)"


def summarize_splits(results: Sequence[EvalResult]) -> MultiSplitResult:
    """Combine per-split results into mean and std (CMC curves cut to the shortest one)."""
    results = list(results)
    if not results:
        raise EvaluationError("no split results to summarise")
    values = {k: np.array([getattr(r, k) for r in results], dtype=np.float64) for k in METRIC_NAMES}
    n = min(len(r.cmc) for r in results)
    curves = np.stack([np.asarray(r.cmc[:n], dtype=np.float64) for r in results])
    return MultiSplitResult(
        results=results,
        mean={k: float(v.mean()) for k, v in values.items()},
        std={k: float(v.std()) for k, v in values.items()},
        cmc=curves.mean(0),
        cmc_std=curves.std(0),
    )


def evaluate_splits(splits: Iterable[Mapping[str, Any]], **common: Any) -> MultiSplitResult:
    """Evaluate every split (a mapping of :func:`evaluate` keyword arguments) and summarise.

    ``common`` holds the arguments shared by all splits (``metric``, ``ap``, ...).  A split
    may also give ``features``, ``pids``, ``camids`` (one bank of all images) with
    ``query``/``gallery`` index arrays instead of separate query/gallery arrays.
    """
    results = []
    for i, split in enumerate(splits):
        kw = dict(common)
        kw.update(_expand_split(split))
        try:
            results.append(evaluate(**kw))
        except EvaluationError as exc:
            raise EvaluationError(f"split {i}: {exc}") from exc
    return summarize_splits(results)


def dataset_split(dataset: Any, features: Any, index: Mapping[str, int]) -> dict:
    """:func:`evaluate` arguments for one query/gallery split of a ``ReIDDataset``.

    ``features`` is a feature bank (rows × dim) and ``index`` maps each image path
    (``ImageRecord.path``, as a string) to its row.  Image paths are passed as image ids,
    so data without cameras (camid -1) gets same-image removal.
    """
    rows = {}
    for side in ("query", "gallery"):
        recs = list(getattr(dataset, side))
        if not recs:
            raise EvaluationError(f"dataset {getattr(dataset, 'name', '?')!r} has an empty {side} split")
        missing = [str(r.path) for r in recs if str(r.path) not in index]
        if missing:
            raise EvaluationError(f"{len(missing)} {side} images have no feature row (first: {missing[0]})")
        rows[side] = (np.array([index[str(r.path)] for r in recs]), recs)
    (qi, qr), (gi, gr) = rows["query"], rows["gallery"]
    feats = np.asarray(features) if not hasattr(features, "detach") else features
    return dict(
        query_features=feats[qi], gallery_features=feats[gi],
        q_pids=np.array([r.pid for r in qr]), g_pids=np.array([r.pid for r in gr]),
        q_camids=np.array([r.camid for r in qr]), g_camids=np.array([r.camid for r in gr]),
        q_images=[str(r.path) for r in qr], g_images=[str(r.path) for r in gr],
    )


def _expand_split(split: Mapping[str, Any]) -> dict:
    split = dict(split)
    if "query" not in split:
        return split
    q = np.asarray(split.pop("query"), dtype=np.int64)
    g = np.asarray(split.pop("gallery"), dtype=np.int64)
    out = dict(split)
    if "features" in out:
        feats = out.pop("features")
        out["query_features"], out["gallery_features"] = feats[q], feats[g]
    for key, (qk, gk) in {"pids": ("q_pids", "g_pids"), "camids": ("q_camids", "g_camids"), "images": ("q_images", "g_images")}.items():
        if key in out:
            arr = out.pop(key)
            if arr is None:
                continue
            arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
            out[qk], out[gk] = arr[q], arr[g]
    return out
