"""The files of ``muva sweep report``: ``sweep_results.md/.csv/.json`` and PNG figures.

Figures (with matplotlib, ``pip install 'muva[plots]'``; without it the tables are still
written and a note says so):

* ``<metric>.png`` — mean per variant and target with the 95 % intervals over seeds and over queries;
* ``diff_<metric>.png`` — each variant minus the reference, with its interval (when there is a reference);
* ``cmc_<target>.png`` — mean CMC curve per variant with the range over seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

from muva.engine.sweep.aggregate import METRICS, SweepSummary
from muva.utils.io import atomic_write_text
from muva.viz.sweep_plots import PlotsUnavailable, cmc_curves, difference_bars, interval_bars

__all__ = ["write_sweep_report"]

_COLUMNS = ("variant", "target", "metric", "mean", "seed_low", "seed_high", "boot_low", "boot_high", "n_seeds")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "target"


def write_sweep_report(summary: SweepSummary, out: str | Path) -> tuple[list[Path], list[str]]:
    """Write the tables and figures into ``out``; returns the files and notes (e.g. no matplotlib)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out / "sweep_results.md", summary.markdown() + "\n")]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(_COLUMNS)
    for r in summary.rows:
        writer.writerow([r[c] if not isinstance(r[c], float) else f"{r[c]:.6f}" for c in _COLUMNS])
    written.append(atomic_write_text(out / "sweep_results.csv", buf.getvalue()))
    written.append(atomic_write_text(out / "sweep_results.json", json.dumps(_nan_to_none(summary.to_json()), indent=1)))
    notes: list[str] = []
    try:
        for m in METRICS:
            written.append(interval_bars(summary.rows, m, out / f"{m}.png"))
            if summary.diffs:
                written.append(difference_bars(summary.diffs, m, summary.reference, out / f"diff_{m}.png"))
        for target, curves in summary.curves.items():
            if curves:
                written.append(cmc_curves(curves, target, out / f"cmc_{_safe(target)}.png"))
    except PlotsUnavailable as exc:
        notes.append(f"{exc} (the tables were written)")
    return written, notes


def _nan_to_none(x):
    """Strict JSON: nan (a single run's interval) becomes null."""
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x
