"""A sweep's numbers: per variant and target, the mean over seeds with 95 % intervals.

For every finished run the report reads ``results.json`` (the reported metrics) and
``per_query.npz`` (per-query AP, INP and first-match rank, written by ``muva train``):

* **over seeds**: Student-t interval of the per-seed values (:func:`muva.evaluation.stats.seed_interval`);
* **over queries**: percentile bootstrap of the seed mean, the same resampled queries applied
  to every seed (:func:`muva.evaluation.stats.bootstrap_over_seeds`);
* **difference to the reference variant**: the per-seed differences (seeds matched) with their
  t-interval, and the paired bootstrap over queries; a difference counts as real only when
  the wider of the two intervals excludes 0 (``low`` / ``high``, what the plots show).

A variant whose runs are not all finished is reported with the seeds it has (``n``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from muva.engine.sweep.plan import SweepError, SweepPlan, read_plan
from muva.evaluation import (bootstrap_over_seeds, load_per_query, paired_bootstrap_difference, paired_seed_difference,
                             seed_interval)

__all__ = ["METRICS", "SweepSummary", "aggregate"]

METRICS = ("mAP", "rank1", "mINP")
_LABEL = {"mAP": "mAP", "rank1": "R1", "mINP": "mINP"}


@dataclass
class SweepSummary:
    """Rows ready for tables and plots (fractions in [0, 1])."""

    folder: str
    reference: str | None
    variants: list[str]
    targets: list[str]
    rows: list[dict[str, Any]]  # variant, target, metric, mean, seed_low, seed_high, boot_low, boot_high, n_seeds, seeds, values, paper
    # variant, target, metric, diff, seed_low/high (paired t), boot_low/high (paired bootstrap),
    # low/high (the wider of the two: what "the interval excludes 0" is judged on), n_pairs
    diffs: list[dict[str, Any]]
    curves: dict[str, dict[str, dict[str, list[float]]]]  # target → variant → {mean, low, high} CMC
    missing: list[str] = field(default_factory=list)  # run folders without results
    n_boot: int = 1000

    def to_json(self) -> dict:
        return {"folder": self.folder, "reference": self.reference, "variants": self.variants, "targets": self.targets,
                "units": "fractions (multiply by 100 for %)", "rows": self.rows, "differences": self.diffs,
                "cmc": self.curves, "missing_runs": self.missing, "bootstrap_draws": self.n_boot}

    def markdown(self) -> str:
        """One table per target (mean [seed interval] {query-bootstrap interval}) and the differences."""
        out = []
        for t in self.targets:
            out += [f"### {t}", "", "| variant | n | " + " | ".join(_LABEL[m] for m in METRICS) + " |",
                    "|---|---|" + "---|" * len(METRICS)]
            for v in self.variants:
                cells = {r["metric"]: r for r in self.rows if r["variant"] == v and r["target"] == t}
                if not cells:
                    continue
                n = next(iter(cells.values()))["n_seeds"]
                out.append(f"| {v}{' (reference)' if v == self.reference else ''} | {n} | "
                           + " | ".join(_cell(cells.get(m)) for m in METRICS) + " |")
            out.append("")
        if self.diffs:
            out += [f"### Difference to {self.reference} (points; seeds paired · queries bootstrapped)", "",
                    "| variant | target | " + " | ".join(f"Δ {_LABEL[m]}" for m in METRICS) + " |",
                    "|---|---|" + "---|" * len(METRICS)]
            keys = sorted({(d["variant"], d["target"]) for d in self.diffs},
                          key=lambda k: (self.targets.index(k[1]), self.variants.index(k[0])))
            for v, t in keys:
                cells = {d["metric"]: d for d in self.diffs if d["variant"] == v and d["target"] == t}
                out.append(f"| {v} | {t} | " + " | ".join(_diff_cell(cells.get(m)) for m in METRICS) + " |")
            out.append("")
        out.append("Mean over seeds, 95 % interval over seeds [t] and over queries {bootstrap}, in %.")
        if self.missing:
            out.append(f"Not finished (left out): {', '.join(self.missing)}.")
        return "\n".join(out)


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.1f}"


def _interval_cell(r: dict | None, value: str, fmt) -> str:
    """``value [seed interval] {bootstrap interval}`` of a row (a bound that is nan is left out)."""
    if r is None:
        return "–"
    text = fmt(r[value])
    if not math.isnan(r["seed_low"]):
        text += f" [{fmt(r['seed_low'])}, {fmt(r['seed_high'])}]"
    if not math.isnan(r["boot_low"]):
        text += f" {{{fmt(r['boot_low'])}, {fmt(r['boot_high'])}}}"
    return text


def _cell(r: dict | None) -> str:
    return _interval_cell(r, "mean", _pct)


def _diff_cell(d: dict | None) -> str:
    return _interval_cell(d, "diff", _signed)


def _finished(plan: SweepPlan) -> tuple[dict, dict, list[str]]:
    """``{(variant, seed): results.json rows}``, ``{(variant, seed): per-query}`` and the missing folders."""
    results, per_query, missing = {}, {}, []
    for run in plan.runs:
        folder = Path(plan.out) / run.folder
        path = folder / "results.json"
        if not path.is_file():
            missing.append(run.folder)
            continue
        try:
            rows = json.loads(path.read_text())["rows"]
            results[(run.variant, run.seed)] = rows[0]["results"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SweepError(f"{path} is not a results file muva wrote ({exc}); delete the run folder to train it again") from None
        if (folder / "per_query.npz").is_file():
            per_query[(run.variant, run.seed)] = load_per_query(folder / "per_query.npz")
    return results, per_query, missing


def _envelope(pick, *bounds: float) -> float:
    """The wider bound of the seed and the query interval (nan when neither exists)."""
    known = [b for b in bounds if not math.isnan(b)]
    return pick(known) if known else math.nan


def aggregate(folder: str | Path, reference: str | None = None, n_boot: int = 1000, seed: int = 0) -> SweepSummary:
    """Read every finished run of the sweep in ``folder`` and compute the intervals."""
    plan = read_plan(folder)
    plan.out = str(folder)  # the folder may have moved since the sweep ran
    reference = reference if reference is not None else plan.reference
    if reference is not None:
        plan.variant(reference)  # an unknown name lists the variants
    results, per_query, missing = _finished(plan)
    if not results:
        raise SweepError(f"no run of the sweep in {folder} has finished yet ({len(missing)} to run): "
                         "run the sweep first (muva sweep ...)")
    variants = [v.name for v in plan.variants if any(k[0] == v.name for k in results)]
    targets = list(dict.fromkeys(t for res in results.values() for t in res))
    rows, diffs, curves = [], [], {}
    for t in targets:
        curves[t] = {}
        for v in variants:
            seeds = [s for s in plan.seeds if t in results.get((v, s), {})]
            if not seeds:
                continue
            pq = [per_query[(v, s)][t] for s in seeds if (v, s) in per_query and t in per_query[(v, s)]]
            for m in METRICS:
                values = [float(results[(v, s)][t][m]) for s in seeds]
                si = seed_interval(values)
                bi = bootstrap_over_seeds(pq, m, n_boot=n_boot, seed=seed) if len(pq) == len(seeds) else None
                rows.append({"variant": v, "target": t, "metric": m, "mean": si.mean, "seed_low": si.low,
                             "seed_high": si.high, "boot_low": bi.low if bi else math.nan,
                             "boot_high": bi.high if bi else math.nan, "n_seeds": len(seeds), "seeds": seeds,
                             "values": values, "paper": None})
            cmcs = np.array([results[(v, s)][t]["cmc"] for s in seeds if "cmc" in results[(v, s)][t]], dtype=float)
            if len(cmcs):
                lo, hi = (np.percentile(cmcs, [2.5, 97.5], axis=0) if len(cmcs) > 1 else (cmcs[0], cmcs[0]))
                curves[t][v] = {"mean": cmcs.mean(0).tolist(), "low": np.asarray(lo).tolist(), "high": np.asarray(hi).tolist()}
        if reference is None or reference not in variants:
            continue
        for v in variants:
            if v == reference:
                continue
            pairs = [s for s in plan.seeds if t in results.get((v, s), {}) and t in results.get((reference, s), {})]
            if not pairs:
                continue
            have_pq = all((x, s) in per_query for x in (v, reference) for s in pairs)
            for m in METRICS:
                d = paired_seed_difference([float(results[(v, s)][t][m]) for s in pairs],
                                           [float(results[(reference, s)][t][m]) for s in pairs])
                b = (paired_bootstrap_difference([per_query[(v, s)][t] for s in pairs],
                                                 [per_query[(reference, s)][t] for s in pairs], m, n_boot=n_boot, seed=seed)
                     if have_pq else None)
                bl, bh = (b.low, b.high) if b else (math.nan, math.nan)
                diffs.append({"variant": v, "target": t, "metric": m, "diff": d.mean, "seed_low": d.low, "seed_high": d.high,
                              "boot_low": bl, "boot_high": bh, "low": _envelope(min, d.low, bl), "high": _envelope(max, d.high, bh),
                              "n_pairs": len(pairs)})
    return SweepSummary(str(folder), reference, variants, targets, rows, diffs, curves, missing, n_boot)
