"""Self-contained HTML run reports: metrics table, loss curves (SVG), ranked lists, part masks.

Pictures are drawn with PIL and embedded as base64 PNG, curves as inline SVG, so one
``report.html`` file holds everything (no matplotlib, no network).  The demo
(``muva demo``) writes its ``report.html`` with these.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from muva.utils.io import atomic_write_text
from muva.viz import draw
from muva.viz.masks import overlay
from muva.viz.ranks import RankLayout, draw_row, rank

__all__ = ["ranked_list_image", "mask_image", "loss_curves_svg", "metrics_table_html", "write_report", "png_data_uri"]

# Pictures come from the rest of muva.viz, so the demo report and `muva viz` draw the same way.
png_data_uri = draw.png_data_uri


def _stack(images: Sequence, width: int, height: int = 1):
    """Stack PIL images vertically on a white canvas (a small blank one when there are none)."""
    canvas = Image.new("RGB", (max([width, *(im.width for im in images)]), max(height, sum(im.height for im in images))), draw.WHITE)
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    return canvas


def ranked_list_image(queries: Sequence, gallery: Sequence, qf, gf, num_queries: int = 4, k: int = 6):
    """Ranked lists of ``num_queries`` evenly spread queries (records), top ``k`` each, drawn by
    :func:`muva.viz.ranks.draw_row` after the evaluation's junk removal (:func:`muva.viz.ranks.rank`)."""
    n = min(num_queries, len(queries))
    picks = np.linspace(0, len(queries) - 1, n).astype(int) if n else np.zeros(0, int)
    chosen = [queries[i] for i in picks]
    lists = rank(np.asarray(qf, dtype=np.float32)[picks], gf, [q.pid for q in chosen], [g.pid for g in gallery],
                 [q.camid for q in chosen], [g.camid for g in gallery], topk=k)
    layout = RankLayout()
    rows = [draw_row(q.path, q.pid, q.camid, [gallery[j].path for j in rl.gallery], rl.distances, rl.matches,
                     [gallery[j].pid for j in rl.gallery], [gallery[j].camid for j in rl.gallery], topk=k, layout=layout)
            for q, rl in zip(chosen, lists)]
    return _stack(rows, layout.size(k)[0])


def mask_image(paths: Sequence[str], predicted: np.ndarray, pseudo: np.ndarray | None, grid: tuple[int, int],
               parts: Sequence[str], size: tuple[int, int] = (64, 128)):
    """Per image: the crop, the pseudo masks and the predicted (last-layer) masks, overlaid with
    :func:`muva.viz.masks.overlay` (part colours of ``muva.viz.masks.PART_COLOURS``)."""
    w, h = size
    pad = 6
    cols = 3 if pseudo is not None else 2
    canvas = Image.new("RGB", (len(paths) * (cols * (w + 2) + pad) + pad, h + 2 * pad + 14), draw.WHITE)
    pen = ImageDraw.Draw(canvas)
    for i, p in enumerate(paths):
        x = pad + i * (cols * (w + 2) + pad)
        img = draw.thumbnail(p, size)
        tiles = [("image", img)]
        if pseudo is not None:
            tiles.append(("pseudo", overlay(img, pseudo[i], grid, parts)))
        tiles.append(("predicted", overlay(img, predicted[i], grid, parts)))
        for t, (label, tile) in enumerate(tiles):
            canvas.paste(tile, (x + t * (w + 2), pad))
            pen.text((x + t * (w + 2), pad + h + 1), label, fill=draw.BLACK)
    return canvas


def loss_curves_svg(series: Mapping[str, Sequence[tuple[float, float]]], title: str, width: int = 520,
                    height: int = 220) -> str:
    """A small SVG line chart of ``{label: [(x, y), ...]}``."""
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f"<p>{html.escape(title)}: no data</p>"
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    ml, mr, mt, mb = 48, 110, 22, 26

    def sx(x):
        return ml + (x - x0) / (x1 - x0) * (width - ml - mr)

    def sy(y):
        return height - mb - (y - y0) / (y1 - y0) * (height - mt - mb)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">',
             f'<text x="{ml}" y="14" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{ml}" y1="{height - mb}" x2="{width - mr}" y2="{height - mb}" stroke="#444"/>',
             f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{height - mb}" stroke="#444"/>',
             f'<text x="{ml - 4}" y="{sy(y1) + 4}" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{ml - 4}" y="{sy(y0) + 4}" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{sx(x0)}" y="{height - 8}">{x0:g}</text>',
             f'<text x="{sx(x1)}" y="{height - 8}" text-anchor="end">{x1:g}</text>']
    for i, (label, s) in enumerate(series.items()):
        colour = palette[i % len(palette)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        parts.append(f'<text x="{width - mr + 6}" y="{mt + 14 * i + 8}" fill="{colour}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def metrics_table_html(rows: Sequence[tuple[str, Mapping[str, float]]], columns: Sequence[str]) -> str:
    """An HTML table of ``[(row label, {column: value in %})]``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *columns])
    body = []
    for label, vals in rows:
        cells = "".join(f"<td>{vals[c]:.1f}</td>" if c in vals else "<td>–</td>" for c in columns)
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write ``[(heading, html body)]`` as one self-contained HTML page."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}h2{margin-top:28px}")
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return atomic_write_text(path, doc)
