"""Background scenes of the synthetic benchmark, one family per domain.

Each camera of a domain looks at its own place: a few scene variants drawn once per
camera (:func:`scene_bank`), from which every image takes a randomly shifted crop.
Families: ``street`` (facade, windows, paved ground, parked bicycles), ``grass`` (sky,
trees, lawn, path), ``indoor`` (wall, doors, lights, tiled floor) and ``texture``
(posters, bricks, value noise).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]


def _jitter(rng: np.random.Generator, colour, amount: float = 18.0) -> RGB:
    c = np.asarray(colour, dtype=float) + rng.normal(0, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def value_noise(rng: np.random.Generator, w: int, h: int, cell: int, amplitude: float) -> np.ndarray:
    """Smooth random field (h, w) in [-amplitude, amplitude]: upsampled coarse noise."""
    gw, gh = max(2, w // cell + 2), max(2, h // cell + 2)
    coarse = rng.uniform(0, 255, (gh, gw)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse, "L").resize((w, h), Image.BICUBIC), dtype=np.float32)
    return (field / 127.5 - 1.0) * amplitude


def _add_texture(img: Image.Image, rng: np.random.Generator, amplitude: float, cell: int = 24, grain: float = 6.0) -> Image.Image:
    a = np.asarray(img, dtype=np.float32)
    h, w = a.shape[:2]
    field = value_noise(rng, w, h, cell, amplitude)[..., None]
    grain_f = rng.normal(0, grain, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(a + field + grain_f, 0, 255).astype(np.uint8), "RGB")


def _ground_tiles(draw: ImageDraw.ImageDraw, rng, w: int, h: int, y0: int, colour: RGB, line: RGB) -> None:
    draw.rectangle((0, y0, w, h), fill=colour)
    # Rows grow towards the camera; columns converge to a vanishing point above.
    y, step = float(y0), max(4.0, (h - y0) * 0.06)
    while y < h:
        draw.line((0, y, w, y), fill=line, width=1)
        y += step
        step *= 1.18
    vx = w * rng.uniform(0.3, 0.7)
    for k in range(-6, 7):
        draw.line((vx + k * w * 0.04, y0, vx + k * w * 0.3, h), fill=line, width=1)


def _bicycle(draw: ImageDraw.ImageDraw, rng, x: float, y: float, r: float) -> None:
    col = _jitter(rng, (40, 40, 45), 25)
    for cx in (x, x + 2.6 * r):
        draw.ellipse((cx - r, y - r, cx + r, y + r), outline=col, width=2)
    draw.line((x, y, x + 1.2 * r, y - 1.1 * r, x + 2.6 * r, y, x + 1.3 * r, y), fill=col, width=2)
    draw.line((x + 1.2 * r, y - 1.1 * r, x + 2.2 * r, y - 1.5 * r), fill=col, width=2)


def street(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    horizon = int(h * rng.uniform(0.38, 0.55))
    facade = _jitter(rng, [(150, 95, 80), (175, 170, 160), (120, 125, 135), (200, 190, 170)][int(rng.integers(4))], 15)
    img = Image.new("RGB", (w, h), facade)
    d = ImageDraw.Draw(img)
    win = _jitter(rng, (60, 80, 100), 20)
    ww, wh = w * rng.uniform(0.12, 0.2), h * rng.uniform(0.07, 0.11)
    gx, gy = ww * rng.uniform(1.5, 2.2), wh * rng.uniform(1.5, 2.0)
    x0 = -rng.uniform(0, gx)
    for row in range(int(horizon / gy) + 1):
        for col in range(int(w / gx) + 2):
            x, y = x0 + col * gx, 6 + row * gy
            if y + wh < horizon - 4:
                d.rectangle((x, y, x + ww, y + wh), fill=win, outline=_jitter(rng, (230, 230, 225), 10), width=2)
    if rng.random() < 0.5:  # shop front / door
        dx = rng.uniform(0, w * 0.6)
        d.rectangle((dx, horizon - h * 0.22, dx + w * 0.35, horizon), fill=_jitter(rng, (50, 55, 60), 20))
    _ground_tiles(d, rng, w, h, horizon, _jitter(rng, (150, 150, 148), 20), _jitter(rng, (110, 110, 108), 10))
    d.rectangle((0, horizon - 3, w, horizon + 2), fill=_jitter(rng, (95, 95, 95), 10))
    for _ in range(int(rng.integers(0, 4))):
        _bicycle(d, rng, rng.uniform(-0.2, 0.9) * w, horizon + rng.uniform(0.05, 0.3) * h, h * rng.uniform(0.04, 0.06))
    return _add_texture(img, rng, amplitude=14, cell=int(w * 0.2))


def grass(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    horizon = int(h * rng.uniform(0.3, 0.45))
    sky = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    top, low = np.array(_jitter(rng, (120, 165, 215), 15)), np.array(_jitter(rng, (205, 220, 235), 10))
    a = np.empty((h, w, 3), dtype=np.float32)
    a[:horizon] = top * (1 - sky) + low * sky
    lawn = np.array(_jitter(rng, (80, 135, 55), 18), dtype=np.float32)
    a[horizon:] = lawn
    img = Image.fromarray(a.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):  # tree crowns along the horizon
        x, r = rng.uniform(-0.1, 1.1) * w, rng.uniform(0.12, 0.3) * w
        d.rectangle((x - r * 0.08, horizon - r * 0.6, x + r * 0.08, horizon + 4), fill=_jitter(rng, (80, 60, 40), 10))
        d.ellipse((x - r, horizon - r * 2.1, x + r, horizon - r * 0.3), fill=_jitter(rng, (45, 95, 45), 18))
    if rng.random() < 0.6:  # gravel path
        px = rng.uniform(0.2, 0.8) * w
        d.polygon([(px - w * 0.05, horizon), (px + w * 0.05, horizon), (px + w * 0.6, h), (px - w * 0.6, h)],
                  fill=_jitter(rng, (175, 160, 130), 15))
    img = _add_texture(img, rng, amplitude=22, cell=int(w * 0.08), grain=9.0)
    return img


def indoor(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    horizon = int(h * rng.uniform(0.45, 0.6))
    wall = _jitter(rng, [(215, 205, 180), (190, 200, 205), (220, 215, 210), (170, 180, 160)][int(rng.integers(4))], 12)
    img = Image.new("RGB", (w, h), wall)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 3))):  # doors
        dx, dw = rng.uniform(-0.1, 0.8) * w, rng.uniform(0.25, 0.4) * w
        d.rectangle((dx, horizon - h * 0.38, dx + dw, horizon), fill=_jitter(rng, (120, 90, 60), 25), outline=(60, 50, 40), width=2)
    for k in range(int(rng.integers(1, 3))):  # ceiling lights
        lx = rng.uniform(0.1, 0.9) * w
        d.ellipse((lx - w * 0.15, 2, lx + w * 0.15, 14), fill=(250, 250, 240))
    d.rectangle((0, horizon - 6, w, horizon), fill=_jitter(rng, (90, 80, 70), 15))
    a, b = _jitter(rng, (200, 195, 185), 20), _jitter(rng, (150, 140, 130), 20)
    d.rectangle((0, horizon, w, h), fill=a)
    # Tiled floor in perspective: rows grow towards the camera, columns converge upwards.
    vx, cols = w * rng.uniform(0.3, 0.7), 5
    rows, y, step = 0, float(horizon), max(4.0, (h - horizon) * 0.08)
    while y < h:
        spread0, spread1 = 0.5 + (y - horizon) / (h - horizon), 0.5 + (y + step - horizon) / (h - horizon)
        for c in range(-cols, cols):
            if (c + rows) % 2:
                xa, xb = vx + c * w / cols * spread0, vx + (c + 1) * w / cols * spread0
                xc, xd = vx + (c + 1) * w / cols * spread1, vx + c * w / cols * spread1
                d.polygon([(xa, y), (xb, y), (xc, y + step), (xd, y + step)], fill=b)
        y += step
        step *= 1.2
        rows += 1
    return _add_texture(img, rng, amplitude=10, cell=int(w * 0.3), grain=4.0)


def texture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = _jitter(rng, (rng.uniform(60, 200), rng.uniform(60, 200), rng.uniform(60, 200)), 10)
    img = Image.new("RGB", (w, h), base)
    d = ImageDraw.Draw(img)
    kind = int(rng.integers(3))
    if kind == 0:  # brick wall
        bw, bh = w * rng.uniform(0.15, 0.25), h * rng.uniform(0.03, 0.05)
        mortar = _jitter(rng, (200, 195, 185), 10)
        for r in range(int(h / bh) + 1):
            off = (r % 2) * bw / 2
            for c in range(-1, int(w / bw) + 2):
                d.rectangle((c * bw + off, r * bh, c * bw + off + bw - 2, r * bh + bh - 2), fill=_jitter(rng, base, 20), outline=mortar)
    else:  # posters / hoardings
        for _ in range(int(rng.integers(6, 14))):
            x, y = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.1, 1.0) * h
            d.rectangle((x, y, x + rng.uniform(0.2, 0.6) * w, y + rng.uniform(0.1, 0.3) * h),
                        fill=tuple(int(v) for v in rng.integers(20, 235, 3)))
    return _add_texture(img, rng, amplitude=28 if kind else 12, cell=int(w * 0.1), grain=7.0)


FAMILIES = {"street": street, "grass": grass, "indoor": indoor, "texture": texture}


def scene_bank(family: str, seed_words: list[int], size: tuple[int, int], variants: int = 3) -> list[Image.Image]:
    """``variants`` scenes of ``family`` at ``size`` (w, h), deterministic in ``seed_words``."""
    make = FAMILIES[family]
    return [make(np.random.default_rng(list(seed_words) + [v]), size[0], size[1]) for v in range(variants)]
