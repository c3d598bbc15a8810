"""Self-contained HTML run reports: metrics table, loss curves (SVG), ranked lists, part masks.

Pictures are drawn with PIL and embedded as base64 PNG, curves as inline SVG, so one
``report.html`` file holds everything (no matplotlib, no network).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["ranked_list_image", "mask_image", "loss_curves_svg", "metrics_table_html", "write_report", "png_data_uri"]

PART_COLOURS = [(230, 60, 60), (60, 160, 230), (70, 200, 90), (230, 180, 40)]


def png_data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: str, size: tuple[int, int]):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize(size)
    except OSError:
        return Image.new("RGB", size, (90, 90, 90))


def ranked_list_image(queries: Sequence, gallery: Sequence, qf, gf, num_queries: int = 4, k: int = 6,
                      size: tuple[int, int] = (64, 128)):
    """Rows of query + top-k gallery (green border = same identity, red = other); same-camera
    same-identity gallery items are skipped as in evaluation."""
    from PIL import Image, ImageDraw

    qf = np.asarray(qf, dtype=np.float32)
    gf = np.asarray(gf, dtype=np.float32)
    g_pids = np.asarray([g.pid for g in gallery])
    g_cams = np.asarray([g.camid for g in gallery])
    rows = min(num_queries, len(queries))
    picks = np.linspace(0, len(queries) - 1, rows).astype(int) if rows else []
    w, h = size
    pad = 6
    canvas = Image.new("RGB", ((k + 1) * (w + pad) + pad * 3, rows * (h + pad + 14) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, qi in enumerate(picks):
        q = queries[qi]
        d = 1.0 - gf @ qf[qi]
        keep = ~((g_pids == q.pid) & (g_cams == q.camid))
        order = [j for j in np.argsort(d, kind="stable") if keep[j]][:k]
        y = pad + r * (h + pad + 14)
        canvas.paste(_thumb(q.path, size), (pad, y))
        draw.rectangle([pad - 2, y - 2, pad + w + 1, y + h + 1], outline=(40, 40, 40), width=2)
        draw.text((pad, y + h + 1), f"query {q.pid}", fill=(0, 0, 0))
        for c, j in enumerate(order):
            x = pad * 3 + (c + 1) * (w + pad)
            canvas.paste(_thumb(gallery[j].path, size), (x, y))
            colour = (30, 170, 60) if gallery[j].pid == q.pid else (210, 40, 40)
            draw.rectangle([x - 2, y - 2, x + w + 1, y + h + 1], outline=colour, width=3)
            draw.text((x, y + h + 1), f"{d[j]:.2f}", fill=(0, 0, 0))
    return canvas


def _overlay(img, masks: np.ndarray, grid: tuple[int, int], alpha: float = 0.45):
    """Colour the patches of each part (R×L boolean or probability) over the image."""
    from PIL import Image

    rows, cols = grid
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape[:2]
    out = arr.copy()
    for r, m in enumerate(np.asarray(masks, dtype=np.float32)):
        cell = m.reshape(rows, cols)
        up = np.kron(cell, np.ones((int(np.ceil(h / rows)), int(np.ceil(w / cols)))))[:h, :w]
        colour = np.asarray(PART_COLOURS[r % len(PART_COLOURS)], dtype=np.float32)
        weight = (alpha * np.clip(up, 0, 1))[..., None]
        out = out * (1 - weight) + colour * weight
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def mask_image(paths: Sequence[str], predicted: np.ndarray, pseudo: np.ndarray | None, grid: tuple[int, int],
               size: tuple[int, int] = (64, 128)):
    """Per image: the crop, the pseudo masks and the predicted (last-layer) masks overlaid."""
    from PIL import Image, ImageDraw

    w, h = size
    pad = 6
    cols = 3 if pseudo is not None else 2
    canvas = Image.new("RGB", (len(paths) * (cols * (w + 2) + pad) + pad, h + 2 * pad + 14), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(paths):
        x = pad + i * (cols * (w + 2) + pad)
        img = _thumb(p, size)
        tiles = [("image", img)]
        if pseudo is not None:
            tiles.append(("pseudo", _overlay(img, pseudo[i], grid)))
        tiles.append(("predicted", _overlay(img, predicted[i], grid)))
        for t, (label, tile) in enumerate(tiles):
            canvas.paste(tile, (x + t * (w + 2), pad))
            draw.text((x + t * (w + 2), pad + h + 1), label, fill=(0, 0, 0))
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
    from muva.utils.io import atomic_write_text

    style = ("body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}h2{margin-top:28px}")
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return atomic_write_text(path, doc)
