"""A sweep's numbers: per variant and target, the mean over seeds with 95 % intervals.

For every finished run the report reads ``results.json`` (the reported metrics) and
``per_query.npz`` (per-query AP, INP and first-match rank, written by ``muva train``):

* **over seeds**: Student-t interval of the per-seed values (:func:`muva.evaluation.stats.seed_interval`);
* **over queries**: percentile bootstrap of the seed mean, the same resampled queries applied
  to every seed (:func:`muva.evaluation.stats.bootstrap_over_seeds`);
* **difference to the reference variant**: the per-seed differences (seeds matched) with their
  t-interval, and the paired bootstrap over queries; a difference counts as real only when
  the wider of the two intervals excludes 0 (``low`` / ``high``, what the plots show).

* with several targets (a protocol's settings), a ``mean (N targets)`` row: per seed the mean
  over the targets (the DG convention), its bootstrap resampling each target's queries on its own;
* the paper's numbers beside a row where the protocol setting (or the config's own sources and
  targets) carries them; they are drawn on the bars of the variant without overrides (the config
  as given);
* for runs with a ``mask_iou.json`` (synthetic data), the IoU of the predicted and of the pseudo
  part masks with the true parts (:mod:`muva.engine.mask_quality`).

A variant whose runs are not all finished is reported with the seeds it has (``n``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from muva.engine.mask_quality import read_mask_quality
from muva.engine.sweep.plan import SweepError, SweepPlan, SweepRun, read_plan
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
    paper: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # target → method → [mAP, R1] in %
    masks: list[dict[str, Any]] = field(default_factory=list)  # variant, part, kind, mean, seed_low, seed_high, n_seeds

    def to_json(self) -> dict:
        return {"folder": self.folder, "reference": self.reference, "variants": self.variants, "targets": self.targets,
                "units": "fractions (multiply by 100 for %; paper numbers are in %)", "rows": self.rows,
                "differences": self.diffs, "cmc": self.curves, "paper": self.paper, "mask_iou": self.masks,
                "missing_runs": self.missing, "bootstrap_draws": self.n_boot}

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
            for method, (m_ap, r1) in self.paper.get(t, {}).items():
                out.append(f"| paper: {method} | – | {m_ap:.1f} | {r1:.1f} | – |")
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
        if self.masks:
            out += self._mask_markdown()
        out.append("Mean over seeds, 95 % interval over seeds [t] and over queries {bootstrap}, in %.")
        if self.missing:
            out.append(f"Not finished (left out): {', '.join(self.missing)}.")
        return "\n".join(out)

    def _mask_markdown(self) -> list[str]:
        parts = list(dict.fromkeys(r["part"] for r in self.masks))
        kinds = list(dict.fromkeys(r["kind"] for r in self.masks))
        out = ["### Part masks against the true parts (IoU %, mean over seeds [t-interval])", "",
               "| variant | masks | " + " | ".join(parts) + " |", "|---|---|" + "---|" * len(parts)]
        for v in self.variants:
            for k in kinds:
                cells = {r["part"]: r for r in self.masks if r["variant"] == v and r["kind"] == k}
                if cells:
                    out.append(f"| {v} | {k} | " + " | ".join(_interval_cell(cells.get(p), "mean", _pct) for p in parts) + " |")
        return out + [""]


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


def _row_key(run: SweepRun, target: str, n_targets: int) -> str:
    """A table row's name: the target, or the protocol setting (with the target when it has several)."""
    if run.setting is None:
        return target
    return run.setting if n_targets == 1 else f"{run.setting}: {target}"


def _finished(plan: SweepPlan) -> tuple[dict, dict, dict, list[str]]:
    """``{(variant, seed): {row key: metrics}}``, the same for per-query results, ``{(variant, seed):
    [mask_iou.json documents]}`` and the folders of runs without results."""
    results: dict = {}
    per_query: dict = {}
    masks: dict = {}
    missing = []
    for run in plan.runs:
        folder = Path(plan.out) / run.folder
        path = folder / "results.json"
        if not path.is_file():
            missing.append(run.folder)
            continue
        try:
            rows = json.loads(path.read_text())["rows"][0]["results"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SweepError(f"{path} is not a results file muva wrote ({exc}); delete the run folder to train it again") from None
        key = (run.variant, run.seed)
        names = {t: _row_key(run, t, len(rows)) for t in rows}
        results.setdefault(key, {}).update({names[t]: r for t, r in rows.items()})
        if (folder / "per_query.npz").is_file():
            pq = load_per_query(folder / "per_query.npz")
            per_query.setdefault(key, {}).update({names[t]: v for t, v in pq.items() if t in names})
        doc = read_mask_quality(folder)
        if doc is not None:
            masks.setdefault(key, []).append(doc)
    return results, per_query, masks, missing


def _add_mean_over_targets(results: dict, per_query: dict, targets: list[str]) -> str | None:
    """Add a ``mean (N targets)`` row key to every run that has all targets (the DG convention for a protocol)."""
    if len(targets) < 2:
        return None
    name = f"mean ({len(targets)} targets)"
    for key, res in results.items():
        if not all(t in res for t in targets):
            continue
        res[name] = {m: float(np.mean([float(res[t][m]) for t in targets])) for m in METRICS}
        cmcs = [res[t].get("cmc") for t in targets]
        if all(c is not None for c in cmcs) and len({len(c) for c in cmcs}) == 1:
            res[name]["cmc"] = np.mean(np.asarray(cmcs, dtype=float), axis=0).tolist()
        pq = per_query.get(key, {})
        # each target one split: resampling each target's queries on its own gives the bootstrap of the mean
        if all(t in pq and len(pq[t]) == 1 for t in targets):
            pq[name] = [pq[t][0] for t in targets]
    return name


def _paper(plan: SweepPlan, targets: list[str], mean_key: str | None) -> dict[str, dict[str, list[float]]]:
    """Published (mAP, R1) per row key: a setting's own numbers, and their mean for the mean row."""
    out = {k: v for k, v in plan.paper.items() if k in targets}
    if "" in plan.paper:  # the config's own sources and targets are a published setting
        own = targets[0] if len(targets) == 1 else mean_key
        if own is not None:
            out[own] = plan.paper[""]
    if mean_key is not None and plan.settings and all(s in plan.paper for s in plan.settings):
        methods = set.intersection(*(set(plan.paper[s]) for s in plan.settings))
        out[mean_key] = {m: [float(np.mean([plan.paper[s][m][i] for s in plan.settings])) for i in (0, 1)]
                         for m in sorted(methods)}
    return out


def _paper_value(paper: dict, key: str, metric: str) -> float | None:
    """The published MUVA number of a row (a fraction), for the base variant's bars."""
    pair = paper.get(key, {}).get("MUVA")
    index = {"mAP": 0, "rank1": 1}.get(metric)
    return None if pair is None or index is None else pair[index] / 100.0


def _envelope(pick, *bounds: float) -> float:
    """The wider bound of the seed and the query interval (nan when neither exists)."""
    known = [b for b in bounds if not math.isnan(b)]
    return pick(known) if known else math.nan


def _mask_values(doc: dict):
    """``((part, kind), IoU)`` of one ``mask_iou.json`` (parts without a value left out)."""
    sets = [(doc.get("source", {}), kind, f"{kind} (training images)") for kind in ("predicted", "pseudo")]
    sets += [(t, "predicted", "predicted (unseen target)") for t in doc.get("targets", {}).values()]
    for part in doc.get("parts", []):
        for where, kind, label in sets:
            x = where.get(kind, {}).get(part)
            if x is not None:
                yield (part, label), float(x)


def _mask_rows(plan: SweepPlan, masks: dict, variants: list[str]) -> list[dict[str, Any]]:
    """Per variant, part and kind (predicted / pseudo on the training images, predicted on the targets):
    the IoU with the true parts, mean over seeds (each seed: mean over its runs) with its t-interval."""
    rows = []
    for v in variants:
        per_kind: dict[tuple[str, str], list[float]] = {}
        for s in plan.seeds:
            seen: dict[tuple[str, str], list[float]] = {}
            for doc in masks.get((v, s), []):
                for key, x in _mask_values(doc):
                    seen.setdefault(key, []).append(x)
            for k, xs in seen.items():
                per_kind.setdefault(k, []).append(float(np.mean(xs)))
        for (part, kind), values in per_kind.items():
            si = seed_interval(values)
            rows.append({"variant": v, "part": part, "kind": kind, "mean": si.mean, "seed_low": si.low, "seed_high": si.high,
                         "boot_low": math.nan, "boot_high": math.nan, "n_seeds": len(values)})
    return rows


def aggregate(folder: str | Path, reference: str | None = None, n_boot: int = 1000, seed: int = 0) -> SweepSummary:
    """Read every finished run of the sweep in ``folder`` and compute the intervals."""
    plan = read_plan(folder)
    plan.out = str(folder)  # the folder may have moved since the sweep ran
    reference = reference if reference is not None else plan.reference
    if reference is not None:
        plan.variant(reference)  # an unknown name lists the variants
    results, per_query, masks, missing = _finished(plan)
    if not results:
        raise SweepError(f"no run of the sweep in {folder} has finished yet ({len(missing)} to run): "
                         "run the sweep first (muva sweep ...)")
    variants = [v.name for v in plan.variants if any(k[0] == v.name for k in results)]
    targets = list(dict.fromkeys(t for res in results.values() for t in res))
    mean_key = _add_mean_over_targets(results, per_query, targets)
    paper = _paper(plan, targets, mean_key)
    if mean_key is not None:
        targets.append(mean_key)
    base_variants = {v.name for v in plan.variants if not v.overrides}  # the config as given: the paper's method
    rows, diffs, curves = [], [], {}
    for t in targets:
        curves[t] = {}
        for v in variants:
            seeds = [s for s in plan.seeds if t in results.get((v, s), {})]
            if not seeds:
                continue
            pq = [per_query[(v, s)][t] for s in seeds if t in per_query.get((v, s), {})]
            for m in METRICS:
                values = [float(results[(v, s)][t][m]) for s in seeds]
                si = seed_interval(values)
                bi = bootstrap_over_seeds(pq, m, n_boot=n_boot, seed=seed) if len(pq) == len(seeds) else None
                rows.append({"variant": v, "target": t, "metric": m, "mean": si.mean, "seed_low": si.low,
                             "seed_high": si.high, "boot_low": bi.low if bi else math.nan,
                             "boot_high": bi.high if bi else math.nan, "n_seeds": len(seeds), "seeds": seeds,
                             "values": values, "paper": _paper_value(paper, t, m) if v in base_variants else None})
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
            have_pq = all(t in per_query.get((x, s), {}) for x in (v, reference) for s in pairs)
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
    return SweepSummary(str(folder), reference, variants, targets, rows, diffs, curves, missing, n_boot, paper,
                        _mask_rows(plan, masks, variants))
