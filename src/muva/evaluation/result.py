"""The result of one query/gallery evaluation: :class:`EvalResult` (CMC, mAP, mINP, per-query values).

:func:`muva.evaluation.evaluate` returns it; the table helpers of
:mod:`muva.evaluation.tables` and the multi-split summary of
:mod:`muva.evaluation.multisplit` read it.  Values are fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalResult:
    """Metrics of one query/gallery evaluation (fractions in [0, 1], not percentages).

    ``cmc[k-1]`` is Rank-k; ``ap``, ``first_match`` and ``inp`` hold per-query values (AP,
    the 0-based rank of the first true match, and INP = number of true matches / (rank of the
    last true match + 1)); ``nan``, ``-1`` and ``nan`` for queries without a valid true match.
    :class:`muva.evaluation.PerQuery` keeps them (and writes them to a file) for confidence
    intervals over queries.
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
    inp: np.ndarray | None = field(default=None, repr=False)
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
