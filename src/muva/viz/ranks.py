"""Ranked-list pictures: a query and its top-k gallery matches.

Ranking follows the evaluation: cosine distance on L2-normalised features, and gallery
items with the **same identity and the same camera** as the query are removed from its
list (junk); so is the query image itself when query and gallery share files.  When
cameras are unknown (-1) nothing is removed for the camera rule.

Layout of one row (all sizes in pixels, parameters of :class:`RankLayout`)::

    margin | query cell | sep | cell 1 | gap | cell 2 | … | cell k | margin

A cell is the thumbnail (``cell_w × cell_h``) framed by ``border`` pixels — blue for the
query, green for a true match, red otherwise — above ``lines`` caption lines of
``line_h`` pixels (rank and distance, file name, identity and camera).  Hence::

    width  = 2·margin + (k+1)·(cell_w + 2·border) + sep + (k−1)·gap
    height = 2·margin + cell_h + 2·border + lines·line_h + 2
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from muva.viz import draw


@dataclass(frozen=True)
class RankLayout:
    """Sizes of a ranked-list row (see the module docstring for the formula)."""

    cell_w: int = 64
    cell_h: int = 128
    border: int = 4
    gap: int = 6
    sep: int = 16
    margin: int = 8
    lines: int = 3
    line_h: int = 12
    font_size: int = 10

    @property
    def framed_w(self) -> int:
        return self.cell_w + 2 * self.border

    @property
    def framed_h(self) -> int:
        return self.cell_h + 2 * self.border

    @property
    def caption_h(self) -> int:
        return self.lines * self.line_h + 2

    def size(self, k: int) -> tuple[int, int]:
        """(width, height) of a row with ``k`` gallery cells."""
        width = 2 * self.margin + (k + 1) * self.framed_w + self.sep + max(k - 1, 0) * self.gap
        return width, 2 * self.margin + self.framed_h + self.caption_h

    def cell_x(self, j: int) -> int:
        """Left edge of cell ``j`` (0 = query, 1..k = gallery ranks)."""
        if j == 0:
            return self.margin
        return self.margin + self.framed_w + self.sep + (j - 1) * (self.framed_w + self.gap)


@dataclass
class RankedList:
    """The top-k of one query after junk removal."""

    query: int
    gallery: np.ndarray  # gallery row indices, best first
    distances: np.ndarray  # cosine distances
    matches: np.ndarray  # bool: same identity as the query


def rank(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: Sequence[int],
    g_pids: Sequence[int],
    q_camids: Sequence[int] | None = None,
    g_camids: Sequence[int] | None = None,
    *,
    topk: int = 10,
    q_paths: Sequence[str] | None = None,
    g_paths: Sequence[str] | None = None,
    chunk: int = 256,
) -> list[RankedList]:
    """Top-``topk`` gallery items per query, skipping same-identity-same-camera items.

    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> g = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    >>> r = rank(q, g, [5], [5, 5, 7], [0], [0, 1, 0], topk=2)[0]
    >>> r.gallery.tolist(), r.matches.tolist()   # gallery 0 is junk (same id, same camera)
    ([1, 2], [True, False])
    """
    q_feats = np.asarray(q_feats, dtype=np.float32)
    g_feats = np.asarray(g_feats, dtype=np.float32)
    q_pids = np.asarray(q_pids)
    g_pids = np.asarray(g_pids)
    q_cams = np.asarray(q_camids if q_camids is not None else [-1] * len(q_pids))
    g_cams = np.asarray(g_camids if g_camids is not None else [-1] * len(g_pids))
    g_path_index = {p: i for i, p in enumerate(g_paths)} if g_paths is not None and q_paths is not None else {}
    out: list[RankedList] = []
    for start in range(0, len(q_feats), chunk):
        sims = q_feats[start : start + chunk] @ g_feats.T
        for row, s in enumerate(sims):
            qi = start + row
            junk = (g_pids == q_pids[qi]) & (g_cams == q_cams[qi]) & (g_cams >= 0)
            s = np.where(junk, -np.inf, s)
            same = g_path_index.get(q_paths[qi]) if g_path_index else None  # type: ignore[index]
            if same is not None:
                s[same] = -np.inf
            valid = int(np.isfinite(s).sum())
            k = min(topk, valid)
            if k == 0:
                out.append(RankedList(qi, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool)))
                continue
            top = np.argpartition(-s, k - 1)[:k]
            top = top[np.argsort(-s[top], kind="stable")]
            out.append(RankedList(qi, top, (1.0 - s[top]).astype(np.float32), g_pids[top] == q_pids[qi]))
    return out


def _caption(d, x: int, y: int, lines: list[str], layout: RankLayout, colour=draw.BLACK) -> None:
    f = draw.font(layout.font_size)
    for i, text in enumerate(lines[: layout.lines]):
        d.text((x, y + i * layout.line_h), draw.fit_text(text, layout.framed_w, layout.font_size), fill=colour, font=f)


def _cam(cam: int) -> str:
    """Camera as in file names (1-based ``c3``), ``?`` when unknown."""
    return "?" if cam < 0 else f"c{cam + 1}"


def _id_text(pid: int, cam: int) -> str:
    pid_s = "id ?" if pid < 0 else f"id {pid}"
    return pid_s if cam < 0 else f"{pid_s} {_cam(cam)}"


def draw_row(
    query_path: str,
    query_pid: int,
    query_cam: int,
    gallery_paths: Sequence[str],
    distances: Sequence[float],
    matches: Sequence[bool],
    gallery_pids: Sequence[int],
    gallery_cams: Sequence[int],
    *,
    topk: int | None = None,
    layout: RankLayout = RankLayout(),
):
    """Draw one ranked list; the picture always has room for ``topk`` cells."""
    k = topk if topk is not None else len(gallery_paths)
    canvas = Image.new("RGB", layout.size(k), draw.WHITE)
    d = ImageDraw.Draw(canvas)
    size = (layout.cell_w, layout.cell_h)
    y = layout.margin
    cap_y = y + layout.framed_h + 2
    q = draw.framed(draw.thumbnail(query_path, size), layout.border, draw.BLUE)
    canvas.paste(q, (layout.cell_x(0), y))
    _caption(d, layout.cell_x(0), cap_y, ["query", draw.basename(query_path), _id_text(query_pid, query_cam)], layout, draw.BLUE)
    for j, (path, dist, ok) in enumerate(zip(gallery_paths, distances, matches), start=1):
        if j > k:
            break
        cell = draw.framed(draw.thumbnail(path, size), layout.border, draw.GREEN if ok else draw.RED)
        x = layout.cell_x(j)
        canvas.paste(cell, (x, y))
        _caption(d, x, cap_y, [f"#{j} d={float(dist):.3f}", draw.basename(path), _id_text(int(gallery_pids[j - 1]), int(gallery_cams[j - 1]))],
                 layout, draw.GREEN if ok else draw.RED)
    return canvas


def choose_queries(paths: Sequence[str], *, names: Sequence[str] | None = None, num: int = 10, seed: int = 0) -> list[int]:
    """Indices of the queries to show: those named (file name or path), else ``num`` at random."""
    if names:
        index: dict[str, int] = {}
        for i, p in enumerate(paths):
            index.setdefault(p, i)
            index.setdefault(draw.basename(p), i)
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"query image(s) not among the queries: {', '.join(missing[:5])}")
        return [index[n] for n in names]
    rng = np.random.default_rng(seed)
    num = min(num, len(paths))
    return sorted(rng.choice(len(paths), size=num, replace=False).tolist())


def visualize_ranks(
    query,
    gallery,
    out_dir: str | Path,
    *,
    topk: int = 10,
    num: int = 10,
    names: Sequence[str] | None = None,
    seed: int = 0,
    layout: RankLayout = RankLayout(),
    title: str = "muva ranked lists",
) -> dict:
    """Draw ranked lists of chosen or random queries: one PNG each and one HTML page.

    ``query`` and ``gallery`` are :class:`~muva.utils.featurefiles.FeatureSet` objects
    (e.g. the ``query`` and ``gallery`` splits of a ``muva extract`` folder).  Returns
    ``{"pngs": [...], "html": path, "rank1_shown": fraction of shown queries whose
    first result matches}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = choose_queries(query.paths, names=names, num=num, seed=seed)
    sub = query.select(chosen)
    lists = rank(sub.features, gallery.features, sub.pids, gallery.pids, sub.camids, gallery.camids,
                 topk=topk, q_paths=sub.paths, g_paths=gallery.paths)
    pngs, sections = [], []
    hits = 0
    for n, (qi, rl) in enumerate(zip(chosen, lists)):
        g = rl.gallery
        img = draw_row(sub.paths[n], int(sub.pids[n]), int(sub.camids[n]), [gallery.paths[i] for i in g], rl.distances,
                       rl.matches, gallery.pids[g], gallery.camids[g], topk=topk, layout=layout)
        stem = Path(sub.paths[n]).stem
        png = out_dir / f"rank_{n:03d}_{stem}.png"
        img.save(png)
        pngs.append(png)
        hits += bool(len(rl.matches) and rl.matches[0])
        rows = "".join(
            f"<tr class='{'ok' if ok else 'bad'}'><td>{r + 1}</td><td>{draw.html_escape(gallery.paths[i])}</td>"
            f"<td>{float(dist):.4f}</td><td>{int(gallery.pids[i])}</td><td>{_cam(int(gallery.camids[i]))}</td></tr>"
            for r, (i, dist, ok) in enumerate(zip(g, rl.distances, rl.matches))
        )
        sections.append(
            f"<section><h2>{n + 1}. {draw.html_escape(draw.basename(sub.paths[n]))} "
            f"<small>(identity {int(sub.pids[n])}, camera {_cam(int(sub.camids[n]))}, query row {qi})</small></h2>"
            f"<img src='{draw.png_data_uri(img)}' width='{img.width}' height='{img.height}' alt='ranked list'>"
            f"<details><summary>top-{len(g)} as text</summary><table><tr><th>rank</th><th>gallery image</th>"
            f"<th>cosine distance</th><th>identity</th><th>camera</th></tr>{rows}</table></details></section>"
        )
    rank1 = hits / max(len(chosen), 1)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{draw.html_escape(title)}</title><style>body{{font-family:sans-serif;margin:1em}}"
        "tr.ok td{color:#0a0}tr.bad td{color:#c00}td,th{padding:0 .6em;text-align:left}"
        "section{margin-bottom:1.5em}</style></head><body>"
        f"<h1>{draw.html_escape(title)}</h1><p>{len(chosen)} queries, top-{topk}; cosine distance; "
        "gallery items of the query's identity and camera are skipped (as in evaluation). "
        "Blue = query, green = same identity, red = different identity. "
        f"Rank-1 correct among the shown queries: {hits}/{len(chosen)}.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    html_path = out_dir / "ranks.html"
    html_path.write_text(page, encoding="utf-8")
    return {"pngs": pngs, "html": html_path, "rank1_shown": rank1, "queries": [sub.paths[n] for n in range(len(chosen))]}
