"""Quality views: a PNG grid of crops with their part boxes and patch masks overlaid.

Each tile shows the crop twice, side by side: left with the part boxes (outline colour
per part, dashed-looking thin outline when the box came from a fallback), right resized
to the model input with the patch masks tinted per part and the patch grid drawn.  The
file name (or key) and the source of each box are written under the tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from muva.data.parts import PARTS
from muva.utils.draw import overlay
from muva.utils.geometry import patch_grid
from muva.utils.io import atomic_write

UNKNOWN_COLOUR = (255, 255, 255)  # a name that is no registered part


def _colour(part: str) -> tuple[int, int, int]:
    """The part's colour in every muva picture (:attr:`muva.data.parts.Part.colour`)."""
    record = PARTS.get(part)
    return record.colour if record is not None else UNKNOWN_COLOUR


def _tile(image, boxes: Mapping, masks: np.ndarray | None, parts: Sequence[str], grid: tuple[int, int], input_size: tuple[int, int], scale: int, caption: str):
    H, W = input_size
    th, tw = H * scale, W * scale
    left = image.convert("RGB").resize((tw, th), Image.BILINEAR)
    sx, sy = tw / image.size[0], th / image.size[1]
    draw = ImageDraw.Draw(left)
    for part in parts:
        pb = boxes.get(part)
        if pb is None:
            continue
        box = getattr(pb, "box", pb)
        fallback = getattr(pb, "reason", None) is not None
        color = _colour(part)
        x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx - 1, box[3] * sy - 1
        draw.rectangle([x0, y0, x1, y1], outline=color, width=1 if fallback else 2 * max(1, scale // 2))
    right = image.convert("RGB").resize((tw, th), Image.BILINEAR)
    if masks is not None:
        rows, cols = grid
        ph, pw = th / rows, tw / cols
        right = overlay(right, np.asarray(masks, dtype=np.float32), grid, [_colour(p) for p in parts])
        d2 = ImageDraw.Draw(right)
        for r in range(1, rows):
            d2.line([(0, r * ph), (tw, r * ph)], fill=(0, 0, 0), width=1)
        for c in range(1, cols):
            d2.line([(c * pw, 0), (c * pw, th)], fill=(0, 0, 0), width=1)
    cap_h = 12 * (1 + len(parts))
    tile = Image.new("RGB", (2 * tw + 4, th + cap_h), (255, 255, 255))
    tile.paste(left, (0, 0))
    tile.paste(right, (tw + 4, 0))
    d = ImageDraw.Draw(tile)
    d.text((2, th + 1), caption[-(2 * tw // 6) :], fill=(0, 0, 0))
    for i, part in enumerate(parts):
        pb = boxes.get(part)
        src = getattr(pb, "source", "?") if pb is not None else "-"
        why = getattr(pb, "reason", None) if pb is not None else None
        d.text((2, th + 1 + 12 * (i + 1)), f"{part}: {src}" + (f" ({why})" if why else ""), fill=_colour(part) if part in PARTS else (0, 0, 0))
    return tile


def render_grid(
    items: Sequence[tuple],
    parts: Sequence[str],
    *,
    input_size: tuple[int, int] = (256, 128),
    stride: int = 16,
    columns: int = 6,
    scale: int = 1,
):
    """A PIL image of tiles; ``items`` are ``(image, boxes, masks_or_None, caption)``."""
    if not items:
        raise ValueError("nothing to draw: no images selected")
    grid = patch_grid(input_size, stride=stride)
    tiles = [_tile(img, boxes, masks, parts, grid, input_size, scale, caption) for img, boxes, masks, caption in items]
    tw, th = tiles[0].size
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (tw + 8), rows * (th + 8)), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * (tw + 8), (i // columns) * (th + 8)))
    return sheet


def save_png(image, path: str | Path) -> Path:
    """Write a PIL image as PNG atomically."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        image.save(fh, format="PNG")
    return path
