"""Confidence intervals for re-ID metrics: over training seeds, over queries, and paired differences.

All metrics are fractions in [0, 1]; each function returns an :class:`Interval`
(``mean`` = the point estimate, ``low`` / ``high`` = the bounds at ``confidence`` c).

**Over seeds.**  :func:`seed_interval` is the Student-t interval of the mean of n per-seed
values x_1..x_n (one training run each)::

    mean ± t_{(1+c)/2, n-1} · s / √n,    s² = Σ_i (x_i − mean)² / (n − 1)

e.g. 0.5, 0.6, 0.7 at c = 0.95: 0.6 ± 4.3027 · 0.1 / √3 = 0.6 ± 0.2484.  One run gives no
interval (``low`` = ``high`` = nan).  :func:`paired_seed_difference` is the same interval
of the per-seed differences d_i = x_i − r_i of a variant and a reference trained with the
same seeds (matched by position).

**Over queries.**  A percentile bootstrap.  A split's metric is the mean over its n_s valid
queries of a per-query value v_{s,i} (AP for mAP, INP for mINP, 1 if the first true match
is at rank 0 else 0 for Rank-1), and a multi-split target reports the mean over its S
splits.  Draw b resamples the valid queries of each split with replacement — indices
I_{b,s}, n_s of them, drawn independently per split — and computes::

    T_b = (1/S) Σ_s (1/n_s) Σ_{i ∈ I_{b,s}} v_{s,i}

The interval is the (1−c)/2 and (1+c)/2 quantiles of T_1..T_B around the reported value
(:func:`bootstrap_interval`).  :func:`bootstrap_over_seeds` takes several seeds' runs on
the same queries: each draw's indices are applied to every seed and T_b is the mean over
the seeds, so the interval reflects the query sampling of the seed-mean (by linearity,
v_{s,i} is then query i's value averaged over the seeds).
:func:`paired_bootstrap_difference` applies the same indices to a variant and a reference
(v_{s,i} = variant seed-mean − reference seed-mean of query i), so queries that both get
right, or both get wrong, cancel out.

Draws are vectorised (one ``rng.integers`` matrix per split, from
``numpy.random.default_rng(seed)``): the same ``seed`` gives the same interval.

>>> iv = seed_interval([0.5, 0.6, 0.7])
>>> round(iv.mean, 4), round(iv.half_width, 4), iv.n
(0.6, 0.2484, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from muva.evaluation.distances import EvaluationError
from muva.evaluation.perquery import PerQuery

__all__ = [
    "INTERVAL_METRICS",
    "Interval",
    "bootstrap_interval",
    "bootstrap_over_seeds",
    "paired_bootstrap_difference",
    "paired_seed_difference",
    "seed_interval",
]

INTERVAL_METRICS = ("mAP", "rank1", "mINP")
_BLOCK = 1 << 21  # resampled values gathered at once (16 MiB of float64)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence bounds (fractions; nan bounds when there is no interval).

    ``n`` is the number of independent units the interval is over: seeds for the t-intervals,
    valid queries (summed over the splits) for the bootstraps.
    """

    mean: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        """JSON-ready values (nan written as ``None``)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {"mean": num(self.mean), "low": num(self.low), "high": num(self.high), "half_width": num(self.half_width),
                "n": int(self.n), "confidence": float(self.confidence), "method": self.method}


# --------------------------------------------------------------------------------------
# over seeds


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of per-seed values (one run: no interval, nan bounds)."""
    x = _finite(values, "values")
    return _t_interval(x, confidence, f"Student t over {len(x)} seeds")


def paired_seed_difference(values: Sequence[float], ref_values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean per-seed difference ``values[i] - ref_values[i]`` (seeds matched by position)."""
    x, r = _finite(values, "values"), _finite(ref_values, "ref_values")
    if len(x) != len(r):
        raise EvaluationError(
            f"paired difference: {len(x)} variant values but {len(r)} reference values; "
            "give one value per seed for both, in the same seed order"
        )
    return _t_interval(x - r, confidence, f"paired Student t over {len(x)} seeds (variant - reference)")


def _t_interval(x: np.ndarray, confidence: float, method: str) -> Interval:
    _check_confidence(confidence)
    n, mean = len(x), float(np.mean(x))
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, "single run (no interval)", confidence)
    # SciPy is imported here, not at the top: `import muva.evaluation` stays NumPy-only
    # (the command line imports it at start-up; tests/test_evaluation.py checks it)
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, method, confidence)


def _finite(values: Sequence[float], name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{name} must be numbers (one per seed): {exc}") from exc
    if len(x) == 0:
        raise EvaluationError(f"{name} is empty: give one value per seed")
    if not np.all(np.isfinite(x)):
        raise EvaluationError(f"{name} must be finite numbers, got {x.tolist()}")
    return x


# --------------------------------------------------------------------------------------
# over queries


def bootstrap_interval(splits: Sequence[PerQuery], metric: str, n_boot: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap over the queries of one run (one :class:`PerQuery` per split)."""
    return bootstrap_over_seeds([splits], metric, n_boot=n_boot, confidence=confidence, seed=seed)


def bootstrap_over_seeds(runs: Sequence[Sequence[PerQuery]], metric: str, n_boot: int = 1000,
                         confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap over queries of the seed-mean (``runs[i]`` = seed i's per-split results).

    Every seed must rank the same queries (same number of splits and of valid queries).
    """
    runs = _runs(runs, "runs")
    _check_aligned([(f"run {i}", r) for i, r in enumerate(runs)])
    values = [_seed_mean(runs, k, metric) for k in range(len(runs[0]))]
    point = float(np.mean([_reported(r, metric) for r in runs]))
    seeds = f", {len(runs)} seeds" if len(runs) > 1 else ""
    return _bootstrap(values, point, metric, n_boot, confidence, seed, f"percentile bootstrap over queries{seeds}")


def paired_bootstrap_difference(runs: Sequence[Sequence[PerQuery]], ref_runs: Sequence[Sequence[PerQuery]], metric: str,
                                n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of (variant seed-mean - reference seed-mean), the same resampled queries for both.

    ``runs`` / ``ref_runs``: each seed's per-split results (their numbers of seeds may differ);
    every run must have the same splits with the same number of valid queries.
    """
    runs, ref = _runs(runs, "runs"), _runs(ref_runs, "ref_runs")
    _check_aligned([(f"run {i}", r) for i, r in enumerate(runs)] + [(f"reference run {i}", r) for i, r in enumerate(ref)])
    values = [_seed_mean(runs, k, metric) - _seed_mean(ref, k, metric) for k in range(len(runs[0]))]
    point = float(np.mean([_reported(r, metric) for r in runs])) - float(np.mean([_reported(r, metric) for r in ref]))
    return _bootstrap(values, point, metric, n_boot, confidence, seed,
                      f"paired percentile bootstrap over queries ({len(runs)} vs {len(ref)} seeds, variant - reference)")


def _bootstrap(values: list[np.ndarray], point: float, metric: str, n_boot: int, confidence: float, seed: int,
               method: str) -> Interval:
    _check_confidence(confidence)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise EvaluationError(f"n_boot must be a positive integer (bootstrap draws), got {n_boot!r}")
    rng = np.random.default_rng(seed)
    total = np.zeros(int(n_boot))
    for x in values:  # splits resampled independently: one index matrix each
        idx = rng.integers(0, len(x), size=(int(n_boot), len(x)), dtype=np.int32 if len(x) < 2**31 else np.int64)
        total += _row_means(x, idx)
    total /= len(values)
    low, high = np.quantile(total, [(1 - confidence) / 2, (1 + confidence) / 2])
    n = int(sum(len(x) for x in values))
    splits = f", {len(values)} splits" if len(values) > 1 else ""
    return Interval(point, float(low), float(high), n, f"{metric}: {method} ({n_boot} draws{splits})", confidence)


def _row_means(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[idx].mean(axis=1)``, gathered in blocks of rows so memory stays bounded."""
    rows = max(1, _BLOCK // max(1, idx.shape[1]))
    out = np.empty(idx.shape[0])
    for a in range(0, idx.shape[0], rows):
        out[a:a + rows] = x[idx[a:a + rows]].mean(axis=1)
    return out


def _runs(runs: Sequence[Sequence[PerQuery]], name: str) -> list[list[PerQuery]]:
    wrap = f"{name} is a list of runs (one list of per-split PerQuery per seed); wrap a single run as [run]"
    if isinstance(runs, PerQuery) or any(isinstance(r, PerQuery) for r in runs):
        raise EvaluationError(f"{name} holds PerQuery objects directly: {wrap}")
    out = [list(r) for r in runs]
    if not out:
        raise EvaluationError(f"{name} is empty: give each seed's per-split results (a list of PerQuery per seed)")
    for i, run in enumerate(out):
        if not run or not all(isinstance(s, PerQuery) for s in run):
            raise EvaluationError(f"{name}[{i}] must be a non-empty list of PerQuery (one per split): {wrap}")
    return out


def _check_aligned(labelled: list[tuple[str, list[PerQuery]]]) -> None:
    """Every run has the same splits, each with the same number of valid queries (and the same paths when known)."""
    first_label, first = labelled[0]
    for label, run in labelled[1:]:
        if len(run) != len(first):
            raise EvaluationError(f"{label} has {len(run)} splits but {first_label} has {len(first)}; compare runs on the same target")
    for k in range(len(first)):
        ref = first[k]
        if ref.num_valid_queries == 0:
            raise EvaluationError(f"split {k}: {first_label} has no valid query to resample")
        for label, run in labelled[1:]:
            pq = run[k]
            if pq.num_valid_queries != ref.num_valid_queries:
                raise EvaluationError(
                    f"split {k}: {label} has {pq.num_valid_queries} valid queries but {first_label} has "
                    f"{ref.num_valid_queries}; the runs must be evaluated on the same queries"
                )
            if pq.queries is not None and ref.queries is not None:
                mine = [q for q, v in zip(pq.queries, pq.valid) if v]
                theirs = [q for q, v in zip(ref.queries, ref.valid) if v]
                if mine != theirs:
                    diff = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
                    raise EvaluationError(
                        f"split {k}: {label} and {first_label} rank different queries (valid query {diff}: "
                        f"{mine[diff]!r} vs {theirs[diff]!r}); the runs must be evaluated on the same queries"
                    )


def _seed_mean(runs: list[list[PerQuery]], k: int, metric: str) -> np.ndarray:
    """Per-valid-query values of split ``k``, averaged over the seeds."""
    return np.mean(np.stack([r[k].values(metric) for r in runs]), axis=0)


def _reported(run: list[PerQuery], metric: str) -> float:
    """The number a run reports: the split's metric, or the mean over splits (as ``MultiSplitResult``)."""
    if metric not in INTERVAL_METRICS:
        raise EvaluationError(f"unknown metric {metric!r}; choose one of {', '.join(INTERVAL_METRICS)}")
    return float(np.array([getattr(s, metric) for s in run], dtype=np.float64).mean())


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise EvaluationError(f"confidence must be a number between 0 and 1 (e.g. 0.95), got {confidence!r}")
