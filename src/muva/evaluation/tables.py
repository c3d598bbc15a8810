"""Result tables in the paper's layout: mAP / Rank-1 per target plus the average.

>>> from muva.evaluation import EvalResult
>>> import numpy as np
>>> r = EvalResult(cmc=np.array([0.5, 0.75]), mAP=0.4, mINP=0.2, num_valid_queries=4, num_queries=4, num_gallery=9)
>>> print(results_table({"MA→D": r}, method="ours").to_markdown())
| Method | MA→D mAP | MA→D R1 | Average mAP | Average R1 |
|---|---|---|---|---|
| ours | 40.0 | 50.0 | 40.0 | 50.0 |

Values are percentages with one decimal in Markdown, full precision in CSV / JSON.
:meth:`ResultTable.write` writes ``<stem>.md``, ``<stem>.csv``, ``<stem>.json`` and the
full CMC curves in ``<stem>_cmc.csv`` (one column per method/target, Rank 1..max_rank).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from muva.utils.io import atomic_write_text


def _is_result(x: Any) -> bool:
    return hasattr(x, "mAP") and hasattr(x, "cmc")


@dataclass
class ResultTable:
    """Rows of ``(method, {target: result})`` over an ordered list of targets."""

    rows: list[tuple[str, dict[str, Any]]]
    targets: list[str]

    def _cells(self, res: Mapping[str, Any]) -> tuple[list[float | None], float | None, float | None]:
        vals: list[float | None] = []
        maps, r1s = [], []
        for t in self.targets:
            r = res.get(t)
            if r is None:
                vals += [None, None]
            else:
                vals += [100.0 * float(r.mAP), 100.0 * float(r.rank1)]
                maps.append(100.0 * float(r.mAP))
                r1s.append(100.0 * float(r.rank1))
        avg_map = float(np.mean(maps)) if maps else None
        avg_r1 = float(np.mean(r1s)) if r1s else None
        return vals, avg_map, avg_r1

    def header(self) -> list[str]:
        cols = ["Method"]
        for t in self.targets:
            cols += [f"{t} mAP", f"{t} R1"]
        return cols + ["Average mAP", "Average R1"]

    def to_markdown(self, digits: int = 1) -> str:
        """A GitHub Markdown table (percentages, ``digits`` decimals; ``–`` for a missing target)."""
        fmt = lambda v: "–" if v is None else f"{v:.{digits}f}"  # noqa: E731
        lines = ["| " + " | ".join(self.header()) + " |", "|" + "---|" * len(self.header())]
        for method, res in self.rows:
            vals, am, ar = self._cells(res)
            lines.append("| " + " | ".join([method] + [fmt(v) for v in vals] + [fmt(am), fmt(ar)]) + " |")
        return "\n".join(lines)

    def to_csv(self) -> str:
        """CSV with the same columns as the Markdown table, full precision."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header())
        for method, res in self.rows:
            vals, am, ar = self._cells(res)
            w.writerow([method] + ["" if v is None else repr(round(v, 6)) for v in vals + [am, ar]])
        return buf.getvalue()

    def to_json(self) -> dict:
        """``{"targets": [...], "rows": [{"method", "results": {target: metrics}, "average": {...}}]}``."""
        rows = []
        for method, res in self.rows:
            _, am, ar = self._cells(res)
            rows.append(
                {
                    "method": method,
                    "results": {t: res[t].to_dict() for t in self.targets if t in res},
                    "average": {"mAP": None if am is None else am / 100.0, "rank1": None if ar is None else ar / 100.0},
                }
            )
        return {"targets": list(self.targets), "units": "fractions (multiply by 100 for %)", "rows": rows}

    def cmc_csv(self, max_rank: int | None = None) -> str:
        """Full CMC curves, one column per (method, target), in percent."""
        cols, curves = [], []
        for method, res in self.rows:
            for t in self.targets:
                if t in res:
                    cols.append(t if len(self.rows) == 1 else f"{method} {t}")
                    curves.append(np.asarray(res[t].cmc, dtype=np.float64))
        n = max((len(c) for c in curves), default=0)
        if max_rank is not None:
            n = min(n, max_rank)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank"] + cols)
        for k in range(n):
            w.writerow([k + 1] + [f"{100.0 * c[min(k, len(c) - 1)]:.4f}" for c in curves])
        return buf.getvalue()

    def write(self, out: str | Path, stem: str = "results", extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.csv``, ``<stem>.json`` and ``<stem>_cmc.csv`` into folder ``out``.

        ``extra``: more top-level entries of ``<stem>.json`` (e.g. where each row came from).
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        doc = {**self.to_json(), **(extra or {})}
        paths = {
            "markdown": atomic_write_text(out / f"{stem}.md", self.to_markdown() + "\n"),
            "csv": atomic_write_text(out / f"{stem}.csv", self.to_csv()),
            "json": atomic_write_text(out / f"{stem}.json", json.dumps(doc, indent=2) + "\n"),
            "cmc": atomic_write_text(out / f"{stem}_cmc.csv", self.cmc_csv()),
        }
        return paths


def results_table(results: Mapping[str, Any], method: str = "MUVA") -> ResultTable:
    """Build a :class:`ResultTable` from ``{target: result}`` (one row named ``method``) or
    ``{method: {target: result}}`` (one row per method).  Results are
    :class:`~muva.evaluation.EvalResult` or :class:`~muva.evaluation.MultiSplitResult`."""
    if not results:
        raise ValueError("no results to tabulate")
    if all(_is_result(v) for v in results.values()):
        rows = [(method, dict(results))]
    elif all(isinstance(v, Mapping) for v in results.values()):
        rows = [(m, dict(v)) for m, v in results.items()]
    else:
        raise TypeError("results must map target → result, or method → {target → result}")
    targets: list[str] = []
    for _, res in rows:
        for t, r in res.items():
            if not _is_result(r):
                raise TypeError(f"result for {t!r} has no mAP/cmc (got {type(r).__name__})")
            if t not in targets:
                targets.append(t)
    return ResultTable(rows=rows, targets=targets)


def write_cmc(results: Mapping[str, Any], path: str | Path, max_rank: int | None = None) -> Path:
    """Write the CMC curves of ``{name: result}`` as CSV (rank, one column per name, percent)."""
    return atomic_write_text(path, results_table(results, method="cmc").cmc_csv(max_rank))
