"""PNG figures of a seeded sweep (``muva sweep``): intervals, differences, CMC curves.

All values come in as fractions (0..1) and are drawn as percent; differences are drawn in
percentage points.  Three figures:

* :func:`interval_bars` — one group of bars per target, one bar per variant (its mean over
  seeds), with two 95 % intervals on each bar: the interval over seeds (thick line, no caps,
  on the bar's centre) and the bootstrap interval (thin line with caps, beside it), and a
  diamond where a published ("paper") value is known;
* :func:`difference_bars` — one panel per target, a horizontal bar per variant for its
  difference to a reference variant, with its interval; bars whose interval excludes 0 are
  coloured (green above, red below), the others grey;
* :func:`cmc_curves` — matching rate against rank for each variant of one target, with a
  shaded band where a low/high curve is given.

Variants keep the colour of their position (first appearance in the rows, or the order of
the ``curves`` mapping), so a sweep's figures agree when they are given the variants in the
same order.

matplotlib is optional (``pip install 'muva[plots]'``).  It is imported when a figure is
drawn, never at import time; figures are drawn on an Agg canvas of their own (not through
``pyplot``), so nothing stays open after a call and an interactive session's backend is left
alone.  Without matplotlib every function raises :class:`PlotsUnavailable`.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

from muva.utils.errors import MuvaError

__all__ = ["PlotsUnavailable", "SweepPlotError", "interval_bars", "difference_bars", "cmc_curves", "METRIC_LABELS"]

METRIC_LABELS = {"mAP": "mAP", "rank1": "R1", "mINP": "mINP"}
DPI = 120

_GOOD, _BAD, _NEUTRAL = "#2a9d4b", "#d1452f", "#9a9a9a"


class PlotsUnavailable(MuvaError, ImportError):
    """PNG figures were asked for but matplotlib is not installed."""

    def __init__(self, message: str = "PNG plots need matplotlib: pip install 'muva[plots]'") -> None:
        super().__init__(message)


class SweepPlotError(MuvaError, ValueError):
    """The rows or curves given to a sweep figure cannot be drawn (none for the metric, bad lengths)."""


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or :class:`PlotsUnavailable` when matplotlib is absent."""
    try:
        import matplotlib  # noqa: F401  (the top package first: a stubbed-out one must fail here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotsUnavailable() from exc
    return Figure, FigureCanvasAgg


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _pct(value: Any) -> float:
    """A fraction as percent; None and nan become nan."""
    if value is None:
        return math.nan
    value = float(value)
    return value * 100.0 if math.isfinite(value) else math.nan


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width=max(width, 6), break_long_words=True)) or str(text)


def _save(fig: Any, canvas_cls: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas_cls(fig)
    fig.savefig(out, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    fig.clear()  # the figure is not registered anywhere (no pyplot); clearing frees its artists now
    return out


def _select(rows: Sequence[Mapping[str, Any]], metric: str, what: str) -> list[Mapping[str, Any]]:
    chosen = [r for r in rows if r.get("metric") == metric]
    if not chosen:
        found = sorted({str(r.get("metric")) for r in rows})
        raise SweepPlotError(f"no {what} rows for metric {metric!r} (the rows have: {', '.join(found) or 'none'}); "
                             f"pass one of those metrics, or rows that include {metric!r}")
    return chosen


# --------------------------------------------------------------------------- interval bars
def interval_bars(rows: Sequence[Mapping[str, Any]], metric: str, out: str | Path, title: str | None = None) -> Path:
    """Grouped bars of ``metric`` (mean over seeds) per target and variant, with both 95 % intervals.

    ``rows``: dicts with ``variant``, ``target``, ``metric``, ``mean``, ``seed_low``/``seed_high``
    (interval over seeds), ``boot_low``/``boot_high`` (bootstrap interval), ``n_seeds`` and
    ``paper`` (a published value or None); only rows of ``metric`` are drawn.  Intervals that
    are nan (a single run) are left out.  Returns ``out``.
    """
    Figure, Canvas = _matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    chosen = _select(rows, metric, "interval")
    targets = _ordered([str(r["target"]) for r in chosen])
    variants = _ordered([str(r["variant"]) for r in chosen])
    colours = dict(zip(variants, _palette(len(variants))))
    by_key = {(str(r["variant"]), str(r["target"])): r for r in chosen}
    nv, nt = len(variants), len(targets)

    group = 0.8
    width = group / nv
    fig_w = min(max(6.0, 1.5 + nt * (0.3 * nv + 0.5)), 16.0)
    fig = Figure(figsize=(fig_w, 4.6 if nv * nt <= 24 else 5.6))
    ax = fig.add_subplot()
    ax.set_axisbelow(True)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)

    top = 0.0
    seen_paper = seen_seed = seen_boot = False
    seed_lw = max(1.6, min(4.0, 40.0 * width / max(nt, 1)))
    for ti, target in enumerate(targets):
        for vi, variant in enumerate(variants):
            row = by_key.get((variant, target))
            if row is None:
                continue
            x = ti - group / 2 + width * (vi + 0.5)
            mean = _pct(row.get("mean"))
            if math.isfinite(mean):
                ax.bar(x, mean, width=width * 0.92, color=colours[variant], edgecolor="white", linewidth=0.5, zorder=2)
                top = max(top, mean)
            s_lo, s_hi = _pct(row.get("seed_low")), _pct(row.get("seed_high"))
            if _finite(s_lo, s_hi):
                ax.vlines(x, s_lo, s_hi, color="black", linewidth=seed_lw, zorder=4)
                top = max(top, s_hi)
                seen_seed = True
            b_lo, b_hi = _pct(row.get("boot_low")), _pct(row.get("boot_high"))
            if _finite(b_lo, b_hi):
                xb = x + width * 0.25
                ax.errorbar([xb], [(b_lo + b_hi) / 2], yerr=[[(b_hi - b_lo) / 2], [(b_hi - b_lo) / 2]], fmt="none",
                            ecolor="#444444", elinewidth=0.9, capsize=max(1.5, min(4.0, 30 * width / max(nt, 1))),
                            capthick=0.9, zorder=4)
                top = max(top, b_hi)
                seen_boot = True
            paper = _pct(row.get("paper"))
            if math.isfinite(paper):
                ax.plot([x], [paper], marker="D", markersize=6, markerfacecolor="white", markeredgecolor="black",
                        markeredgewidth=1.2, linestyle="none", zorder=5)
                top = max(top, paper)
                seen_paper = True

    ax.set_xticks(range(nt))
    wrap_at = max(8, int(fig_w / nt * 9))
    ax.set_xticklabels([_wrap(t, wrap_at) for t in targets], fontsize=9)
    ax.set_xlim(-0.55, nt - 0.45)
    ax.set_ylim(0, min(max(top * 1.08, 1.0), 105.0) if top < 100 else top * 1.02)
    ax.set_ylabel(f"{_label(metric)} (%)")
    ax.set_xlabel("target")
    ax.set_title(title or f"{_label(metric)} per target (mean over seeds, 95 % intervals)", fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    handles: list[Any] = []
    for variant in variants:
        ns = sorted({int(r["n_seeds"]) for r in chosen
                     if str(r["variant"]) == variant and r.get("n_seeds") is not None})
        suffix = "" if not ns else f" (n={ns[0]})" if len(ns) == 1 else f" (n={ns[0]}–{ns[-1]})"
        handles.append(Patch(facecolor=colours[variant], label=_wrap(variant, 28) + suffix))
    if seen_seed:
        handles.append(Line2D([], [], color="black", linewidth=3.0, label="95 % CI over seeds"))
    if seen_boot:
        handles.append(Line2D([], [], color="#444444", linewidth=0.9, marker="_", markersize=8,
                              markeredgewidth=0.9, label="95 % CI, bootstrap"))
    if seen_paper:
        handles.append(Line2D([], [], linestyle="none", marker="D", markersize=6, markerfacecolor="white",
                              markeredgecolor="black", markeredgewidth=1.2, label="paper"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9,
              title="variant (seeds)", title_fontsize=9, alignment="left")
    return _save(fig, Canvas, out)


# --------------------------------------------------------------------------- difference bars
def difference_bars(rows: Sequence[Mapping[str, Any]], metric: str, reference: str, out: str | Path,
                    title: str | None = None) -> Path:
    """Horizontal bars of ``variant − reference`` for ``metric``, one panel per target.

    ``rows``: dicts with ``variant``, ``target``, ``metric``, ``diff``, ``low``, ``high``
    (fractions; low/high may be nan).  A bar whose interval lies wholly above 0 is green, wholly
    below 0 red, otherwise grey.  Returns ``out``.
    """
    Figure, Canvas = _matplotlib()
    from matplotlib.patches import Patch

    chosen = _select(rows, metric, "difference")
    targets = _ordered([str(r["target"]) for r in chosen])
    variants = _ordered([str(r["variant"]) for r in chosen])
    by_target = {t: [r for r in chosen if str(r["target"]) == t] for t in targets}

    span = 0.0
    for r in chosen:
        for key in ("diff", "low", "high"):
            v = _pct(r.get(key))
            if math.isfinite(v):
                span = max(span, abs(v))
    span = max(span, 0.5) * 1.35  # room for the value labels beyond the whiskers

    longest = max(len(v) for v in variants)
    fig_w = min(max(6.5, 4.5 + 0.07 * min(longest, 40)), 12.0)
    heights = [max(len(by_target[t]), 1) * 0.32 + 0.45 for t in targets]
    fig = Figure(figsize=(fig_w, sum(heights) + 1.3), layout="constrained")
    axes = fig.subplots(len(targets), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    used = set()
    for ax, target in zip(axes, targets):
        trows = by_target[target]
        order = sorted(trows, key=lambda r: variants.index(str(r["variant"])))
        ys = list(range(len(order)))[::-1]
        for y, r in zip(ys, order):
            d, lo, hi = _pct(r.get("diff")), _pct(r.get("low")), _pct(r.get("high"))
            has_ci = _finite(lo, hi)
            if has_ci and lo > 0:
                colour, kind = _GOOD, "up"
            elif has_ci and hi < 0:
                colour, kind = _BAD, "down"
            else:
                colour, kind = _NEUTRAL, "none"
            used.add(kind)
            if math.isfinite(d):
                ax.barh(y, d, height=0.62, color=colour, zorder=2)
            if has_ci:
                ax.errorbar([d if math.isfinite(d) else (lo + hi) / 2], [y], xerr=[[max(d - lo, 0)], [max(hi - d, 0)]]
                            if math.isfinite(d) else [[(hi - lo) / 2], [(hi - lo) / 2]],
                            fmt="none", ecolor="black", elinewidth=1.0, capsize=3, zorder=3)
            if math.isfinite(d):
                right = max(d, hi) if has_ci else d
                left = min(d, lo) if has_ci else d
                text = f"{round(d, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0" for a tiny negative
                if d >= 0:
                    ax.text(right + span * 0.03, y, text, va="center", ha="left", fontsize=8, zorder=4)
                else:
                    ax.text(left - span * 0.03, y, text, va="center", ha="right", fontsize=8, zorder=4)
            else:
                ax.text(0, y, "  n/a", va="center", ha="left", fontsize=8, color="#666666")
        ax.set_yticks(ys)
        ax.set_yticklabels([_wrap(str(r["variant"]), 32) for r in order], fontsize=9)
        ax.set_ylim(-0.6, len(order) - 0.4)
        ax.axvline(0, color="black", linewidth=1.0, zorder=3)
        ax.set_axisbelow(True)
        ax.grid(axis="x", color="#e2e2e2", linewidth=0.8)
        ax.set_title(target, loc="left", fontsize=10, fontweight="bold")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xlim(-span, span)
    axes[-1].set_xlabel(f"Δ {_label(metric)} vs {reference} (points)")
    for ax in axes[:-1]:
        ax.tick_params(axis="x", labelbottom=False)
    legend = [(kind, label, colour) for kind, label, colour in (
        ("up", "95 % interval above 0", _GOOD), ("down", "95 % interval below 0", _BAD),
        ("none", "interval includes 0 (or none)", _NEUTRAL)) if kind in used]
    fig.suptitle(title or f"{_label(metric)}: difference to {reference} (95 % intervals)", fontsize=11)
    fig.legend(handles=[Patch(color=c, label=lab) for _, lab, c in legend], loc="outside lower center",
               ncol=len(legend), frameon=False, fontsize=8)
    return _save(fig, Canvas, out)


# --------------------------------------------------------------------------- CMC curves
def _curve(variant: str, value: Any) -> tuple[list[float], list[float] | None, list[float] | None]:
    if isinstance(value, Mapping):
        if "mean" not in value:
            raise SweepPlotError(f"CMC curve of {variant!r}: a mapping needs a 'mean' list "
                                 f"(and optionally 'low' and 'high'), got keys {sorted(value)}")
        mean = [float(v) for v in value["mean"]]
        low = [float(v) for v in value["low"]] if value.get("low") is not None else None
        high = [float(v) for v in value["high"]] if value.get("high") is not None else None
        for name, band in (("low", low), ("high", high)):
            if band is not None and len(band) != len(mean):
                raise SweepPlotError(f"CMC curve of {variant!r}: {name!r} has {len(band)} ranks but 'mean' has "
                                     f"{len(mean)}; give curves of the same length")
        return mean, low, high
    return [float(v) for v in value], None, None


def cmc_curves(curves: Mapping[str, Any], target: str, out: str | Path, title: str | None = None,
               max_rank: int = 20) -> Path:
    """Matching rate (%) against rank 1..``max_rank`` for each variant on ``target``.

    ``curves``: ``{variant: [cmc at rank 1, rank 2, …]}`` (fractions), or
    ``{variant: {"mean": [...], "low": [...], "high": [...]}}`` to shade a band between low and
    high.  Curves shorter than ``max_rank`` are drawn as far as they go.  Returns ``out``.
    """
    Figure, Canvas = _matplotlib()
    if not curves:
        raise SweepPlotError(f"no CMC curves to draw for target {target!r}; pass {{variant: [cmc...]}}")
    if max_rank < 1:
        raise SweepPlotError(f"max_rank must be at least 1, got {max_rank}")
    parsed = {str(v): _curve(str(v), c) for v, c in curves.items()}
    empty = [v for v, (mean, _, _) in parsed.items() if not mean]
    if empty:
        raise SweepPlotError(f"CMC curves without any rank for {', '.join(map(repr, empty))} on target {target!r}")
    colours = dict(zip(parsed, _palette(len(parsed))))

    fig = Figure(figsize=(7.0, 4.4))
    ax = fig.add_subplot()
    ax.set_axisbelow(True)
    ax.grid(color="#e2e2e2", linewidth=0.8)
    lowest, longest = 100.0, 1
    for variant, (mean, low, high) in parsed.items():
        n = min(max_rank, len(mean))
        longest = max(longest, n)
        ranks = list(range(1, n + 1))
        ys = [_pct(v) for v in mean[:n]]
        if low is not None and high is not None:
            lo, hi = [_pct(v) for v in low[:n]], [_pct(v) for v in high[:n]]
            ax.fill_between(ranks, lo, hi, color=colours[variant], alpha=0.18, linewidth=0, zorder=2)
            lowest = min([lowest, *[v for v in lo if math.isfinite(v)]])
        lowest = min([lowest, *[v for v in ys if math.isfinite(v)]])
        r1 = f"R1 {ys[0]:.1f} %" if math.isfinite(ys[0]) else "R1 n/a"
        ax.plot(ranks, ys, color=colours[variant], linewidth=1.8, marker="o" if n <= 25 else None, markersize=3.5,
                label=f"{_wrap(variant, 28)} ({r1})", zorder=3)
    bottom = max(0.0, math.floor((lowest - 3.0) / 10.0) * 10.0)
    ax.set_ylim(bottom, 100.5)
    ax.set_xlim(0.5, longest + 0.5)
    step = 1 if longest <= 10 else 5 if longest <= 50 else 10
    ax.set_xticks([1, *range(step, longest + 1, step)] if step > 1 else list(range(1, longest + 1)))
    if 1 < step and longest <= 50:
        ax.set_xticks(range(1, longest + 1), minor=True)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title or f"CMC — {target}", fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9, title="variant",
              title_fontsize=9, alignment="left")
    return _save(fig, Canvas, out)
