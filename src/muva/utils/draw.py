"""Drawing primitives shared by muva's pictures: part masks over an image (numpy and PIL only).

Lowest layer, so that both :mod:`muva.grounding.views` (grounding quality grids) and
:mod:`muva.viz` (model masks, ranked lists, reports) draw masks the same way.  Masks are
``R × L`` arrays over a ``rows × cols`` patch grid (row-major); the colour of each mask row
is given by the caller (the part colours are :attr:`muva.data.parts.Part.colour`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["patch_to_pixels", "overlay"]


def patch_to_pixels(mask: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A ``[L]`` patch mask → ``[H, W]`` pixel map for an image of ``size`` = (H, W).

    Patches cover the image in equal cells (overlapping-stride grids are drawn as a
    uniform grid over the picture).

    >>> patch_to_pixels(np.array([1, 0]), (1, 2), (1, 4)).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    rows, cols = grid
    m = np.asarray(mask, dtype=np.float32).reshape(rows, cols)
    h, w = size
    ri = np.minimum((np.arange(h) * rows) // h, rows - 1)
    ci = np.minimum((np.arange(w) * cols) // w, cols - 1)
    return m[ri][:, ci]


def overlay(image, masks: np.ndarray, grid: tuple[int, int], colours: Sequence[tuple[int, int, int]], *,
            alpha: float = 0.55, soft: bool = False, threshold: float = 0.5):
    """Tint ``image`` (PIL, any size) with masks ``[R, L]``, row ``r`` in ``colours[r]``; a new RGB image.

    A pixel inside a mask (value > ``threshold``) takes the mask's colour at strength
    ``alpha`` (times the value itself when ``soft``); pixels in several masks mix their
    colours; each mask's outline is drawn in its colour.
    """
    from PIL import Image

    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = base.shape[:2]
    masks = np.asarray(masks, dtype=np.float32)
    if len(colours) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(colours)} colours")
    tint = np.zeros_like(base)
    weight = np.zeros((h, w, 1), dtype=np.float32)
    edges = np.zeros((h, w), dtype=bool)
    edge_colour = np.zeros_like(base)
    for mask, rgb in zip(masks, colours):
        pix = patch_to_pixels(mask, grid, (h, w))
        on = pix > threshold
        strength = (pix if soft else on.astype(np.float32))[..., None]
        colour = np.asarray(rgb, dtype=np.float32)
        tint += strength * colour
        weight += strength
        inner = _shift(on, 1, 0) & _shift(on, -1, 0) & _shift(on, 0, 1) & _shift(on, 0, -1)
        edge = on & ~inner
        edges |= edge
        edge_colour[edge] = colour
    mixed = np.where(weight > 0, tint / np.maximum(weight, 1e-6), 0)
    a = alpha * np.clip(weight, 0, 1)
    out = base * (1 - a) + mixed * a
    out[edges] = edge_colour[edges]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``m`` moved by ``(dy, dx)`` cells, zero-filled (a neighbour lookup without wrap-around)."""
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = m[ys, xs]
    return out
