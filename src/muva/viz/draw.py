"""Small drawing helpers shared by the visualisations (PIL only)."""

from __future__ import annotations

import base64
import html
import io
import os
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

GREEN = (0, 170, 0)
RED = (220, 0, 0)
BLUE = (30, 90, 230)
GREY = (128, 128, 128)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


@lru_cache(maxsize=8)
def font(size: int = 10):
    """PIL's bundled font at ``size`` pixels (a bitmap font when FreeType is unavailable)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def text_width(text: str, size: int = 10) -> float:
    f = font(size)
    return float(f.getlength(text)) if hasattr(f, "getlength") else 6.0 * len(text)


def fit_text(text: str, width: float, size: int = 10) -> str:
    """Shorten ``text`` in the middle with ``…`` until it fits ``width`` pixels."""
    if text_width(text, size) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head = (keep + 1) // 2
        tail = keep - head
        cand = text[:head] + "…" + (text[-tail:] if tail else "")
        if text_width(cand, size) <= width:
            return cand
    return "…"


def thumbnail(path: str, size: tuple[int, int]):
    """Image at ``path`` resized to ``size`` = (W, H); a grey tile saying why when unreadable."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize(size, Image.BICUBIC)
    except (OSError, ValueError) as exc:
        tile = Image.new("RGB", size, (200, 200, 200))
        d = ImageDraw.Draw(tile)
        d.text((2, 2), fit_text("unreadable", size[0] - 4), fill=BLACK, font=font(10))
        d.text((2, 14), fit_text(type(exc).__name__, size[0] - 4), fill=BLACK, font=font(10))
        return tile


def framed(image, border: int, colour):
    """``image`` with a solid ``border``-pixel frame of ``colour`` around it."""
    out = Image.new("RGB", (image.width + 2 * border, image.height + 2 * border), colour)
    out.paste(image, (border, border))
    return out


def png_data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def html_escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def basename(path: str) -> str:
    return os.path.basename(str(path))
