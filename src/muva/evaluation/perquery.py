"""Per-query results: :class:`PerQuery` and the ``.npz`` file that keeps them for every target.

A confidence interval over queries (:mod:`muva.evaluation.stats`) needs each query's
values, not only the means: :class:`PerQuery` holds, for one query/gallery evaluation
(one split of a target), the per-query AP, INP and 0-based rank of the first true match
that :func:`muva.evaluation.evaluate` computes (``nan`` / ``nan`` / ``-1`` for queries
without a valid true match), and optionally the query image paths.  Its
:attr:`~PerQuery.mAP`, :attr:`~PerQuery.rank1` and :attr:`~PerQuery.mINP` are computed
exactly as :func:`~muva.evaluation.evaluate` computes them (means over the valid queries;
Rank-1 = share of valid queries whose first true match is at rank 0), so they reproduce
the reported numbers bit for bit.  (A single-gallery-shot CMC — CUHK03's classic mode —
draws gallery images at random; its Rank-1 is not a per-query value and is not kept.)

:func:`save_per_query` writes one ``.npz`` (NumPy arrays only, no pickles) with the keys

=============================  ==========  ==============================================
key                            dtype       meaning
=============================  ==========  ==============================================
``<target>/<k>/ap``            float64     AP of each query of split ``k`` (0-based)
``<target>/<k>/inp``           float64     INP of each query
``<target>/<k>/first_match``   int64       rank of the first true match (-1: none)
``<target>/<k>/queries``       str         query image paths (optional)
``muva_per_query``             int64       the format version (1)
=============================  ==========  ==============================================

and :func:`load_per_query` reads it back as ``{target: [PerQuery, ...]}`` (one per split).

>>> import numpy as np
>>> pq = PerQuery(ap=[1.0, 0.5, np.nan], inp=[1.0, 0.25, np.nan], first_match=[0, 1, -1])
>>> pq.num_valid_queries, pq.mAP, pq.rank1, pq.mINP
(2, 0.75, 0.5, 0.625)
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from muva.evaluation.distances import EvaluationError
from muva.evaluation.result import EvalResult
from muva.utils.io import atomic_write

__all__ = ["PER_QUERY_FORMAT", "PerQuery", "load_per_query", "save_per_query"]

PER_QUERY_FORMAT = 1
_VERSION_KEY = "muva_per_query"
_FIELDS = ("ap", "inp", "first_match")


@dataclass(frozen=True, eq=False)
class PerQuery:
    """Per-query values of one query/gallery evaluation (read-only arrays, fractions in [0, 1])."""

    ap: np.ndarray
    inp: np.ndarray
    first_match: np.ndarray
    queries: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        try:
            ap = np.array(self.ap, dtype=np.float64).reshape(-1)
            inp = np.array(self.inp, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"ap and inp must be numbers (nan for queries without a match): {exc}") from exc
        first = np.asarray(self.first_match).reshape(-1)
        if first.dtype.kind not in "iu" and not (first.size == 0 or _integral(first)):
            raise EvaluationError(f"first_match must hold integer ranks (-1 for no match), got dtype {first.dtype}")
        first = first.astype(np.int64)
        if not len(ap) == len(inp) == len(first):
            raise EvaluationError(f"per-query arrays differ in length: ap {len(ap)}, inp {len(inp)}, first_match {len(first)}")
        valid = first >= 0
        if np.isnan(ap[valid]).any() or np.isnan(inp[valid]).any():
            raise EvaluationError("a query with a true match (first_match >= 0) has no AP/INP value (nan)")
        queries = None if self.queries is None else tuple(str(q) for q in self.queries)
        if queries is not None and len(queries) != len(first):
            raise EvaluationError(f"{len(queries)} query paths for {len(first)} queries")
        for arr in (ap, inp, first):
            arr.setflags(write=False)
        for name, value in (("ap", ap), ("inp", inp), ("first_match", first), ("queries", queries)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_result(cls, result: EvalResult, queries: Sequence[str] | None = None) -> PerQuery:
        """The per-query values of an :class:`~muva.evaluation.EvalResult` from :func:`~muva.evaluation.evaluate`."""
        missing = [name for name in _FIELDS if getattr(result, name, None) is None]
        if missing:
            raise EvaluationError(
                f"the result has no per-query {', '.join(missing)} values; use a result returned by "
                "muva.evaluation.evaluate (results built by hand or read from a summary keep only the means)"
            )
        return cls(ap=result.ap, inp=result.inp, first_match=result.first_match, queries=queries)

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of the queries with a true match (those the metrics average over)."""
        return self.first_match >= 0

    @property
    def num_queries(self) -> int:
        return len(self.first_match)

    @property
    def num_valid_queries(self) -> int:
        return int(np.count_nonzero(self.valid))

    def values(self, metric: str) -> np.ndarray:
        """Per-valid-query values whose mean is ``metric`` (``"mAP"``, ``"rank1"`` or ``"mINP"``)."""
        valid = self.valid
        if metric == "mAP":
            return self.ap[valid]
        if metric == "mINP":
            return self.inp[valid]
        if metric == "rank1":
            return (self.first_match[valid] == 0).astype(np.float64)
        raise EvaluationError(f"unknown metric {metric!r}; choose one of mAP, rank1, mINP")

    @property
    def mAP(self) -> float:
        return self._mean(self.ap[self.valid])

    @property
    def mINP(self) -> float:
        return self._mean(self.inp[self.valid])

    @property
    def rank1(self) -> float:
        n = self.num_valid_queries
        return float(np.count_nonzero(self.first_match == 0) / n) if n else float("nan")

    @staticmethod
    def _mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if len(x) else float("nan")


def _integral(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" and bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))


def _as_splits(target: str, value: Any) -> list[PerQuery]:
    if isinstance(value, (EvalResult, PerQuery)):
        value = [value]
    value = getattr(value, "results", value)  # a MultiSplitResult: its per-split results
    splits = list(value)
    if not splits:
        raise EvaluationError(f"target {target!r} has no split results to save")
    out = []
    for k, r in enumerate(splits):
        try:
            out.append(r if isinstance(r, PerQuery) else PerQuery.from_result(r))
        except EvaluationError as exc:
            raise EvaluationError(f"target {target!r}, split {k}: {exc}") from exc
    return out


def save_per_query(path: str | Path, results: Mapping[str, Sequence[EvalResult]],
                   queries: Mapping[str, Sequence[Sequence[str]]] | None = None) -> Path:
    """Write the per-query values of every target to one ``.npz`` (atomically; see the module doc).

    ``results`` maps a target name to its results, one per split (an :class:`EvalResult`
    from :func:`~muva.evaluation.evaluate`, a :class:`PerQuery`, or a ``MultiSplitResult``
    is accepted for the whole sequence).  ``queries`` optionally maps a target to the query
    image paths of each split.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise EvaluationError(f"per-query files are .npz; got {path.name}")
    if not results:
        raise EvaluationError("no results to save: give at least one target")
    queries = dict(queries or {})
    unknown = sorted(set(queries) - set(results))
    if unknown:
        raise EvaluationError(f"query paths given for unknown targets {unknown}; the targets are {sorted(results)}")
    arrays: dict[str, np.ndarray] = {_VERSION_KEY: np.asarray(PER_QUERY_FORMAT, dtype=np.int64)}
    for target, value in results.items():
        if not isinstance(target, str) or not target or target == _VERSION_KEY:
            raise EvaluationError(f"target names must be non-empty strings (not {_VERSION_KEY!r}); got {target!r}")
        splits = _as_splits(target, value)
        paths = queries.get(target)
        if paths is not None and len(paths) != len(splits):
            raise EvaluationError(f"target {target!r}: query paths for {len(paths)} splits, but {len(splits)} split results")
        for k, pq in enumerate(splits):
            qs = pq.queries if paths is None else [str(p) for p in paths[k]]
            if qs is not None and len(qs) != pq.num_queries:
                raise EvaluationError(f"target {target!r}, split {k}: {len(qs)} query paths for {pq.num_queries} queries")
            arrays[f"{target}/{k}/ap"] = np.asarray(pq.ap)
            arrays[f"{target}/{k}/inp"] = np.asarray(pq.inp)
            arrays[f"{target}/{k}/first_match"] = np.asarray(pq.first_match)
            if qs is not None:
                arrays[f"{target}/{k}/queries"] = np.asarray(list(qs), dtype=str)
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_per_query(path: str | Path) -> dict[str, list[PerQuery]]:
    """``{target: [PerQuery of split 0, split 1, ...]}`` from a file of :func:`save_per_query`."""
    path = Path(path)
    hint = "write it with muva.evaluation.save_per_query (a `muva sweep` writes one per run)"
    if not path.is_file():
        raise EvaluationError(f"per-query file not found: {path} ({hint})")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise EvaluationError(f"{path}: not a readable per-query .npz file ({exc}); {hint}") from exc
    version = data.pop(_VERSION_KEY, None)
    if version is None or version.shape != () or int(version) != PER_QUERY_FORMAT:
        found = "no format version" if version is None else f"format version {version!r}"
        raise EvaluationError(f"{path}: not a per-query file of format {PER_QUERY_FORMAT} ({found}); {hint}")
    groups: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for key, arr in data.items():
        parts = key.rsplit("/", 2)
        if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in (*_FIELDS, "queries"):
            raise EvaluationError(f"{path}: unexpected key {key!r} (expected <target>/<split>/ap|inp|first_match|queries)")
        groups.setdefault(parts[0], {}).setdefault(int(parts[1]), {})[parts[2]] = arr
    if not groups:
        raise EvaluationError(f"{path}: the file holds no target; {hint}")
    out: dict[str, list[PerQuery]] = {}
    for target, splits in groups.items():
        if sorted(splits) != list(range(len(splits))):
            raise EvaluationError(f"{path}: target {target!r} has splits {sorted(splits)}; expected 0..{len(splits) - 1}")
        out[target] = []
        for k in range(len(splits)):
            fields = splits[k]
            missing = [f for f in _FIELDS if f not in fields]
            if missing:
                raise EvaluationError(f"{path}: target {target!r}, split {k} lacks {', '.join(missing)}")
            try:
                q = fields.get("queries")
                out[target].append(PerQuery(ap=fields["ap"], inp=fields["inp"], first_match=fields["first_match"],
                                            queries=None if q is None else q.reshape(-1).tolist()))
            except (EvaluationError, ValueError, TypeError) as exc:
                raise EvaluationError(f"{path}: target {target!r}, split {k}: {exc}") from exc
    return out
