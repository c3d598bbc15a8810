"""Domain and camera styles: how each synthetic domain (and camera) renders its images.

Domains differ the way real re-ID datasets do: background family, clothing season,
illumination, colour cast (white balance), gamma, contrast, saturation, blur, sensor
noise, JPEG quality and effective resolution.  Cameras inside a domain differ slightly
(gain, cast, blur, noise, JPEG quality, a light gradient, viewpoint mix and person scale)
and each looks at its own place.

Domain parameters are spread over their ranges with a low-discrepancy sequence (domain
``k`` takes the fractional part of ``(k + 1) * alpha + offset`` per parameter), so any
handful of domains covers the ranges instead of clustering by chance.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from muva.data.synth.config import SynthConfig

SEASON_ORDER = ("mild", "summer", "winter")
# Irrational multipliers, one per spread parameter.
# The colour-cast hue uses the golden ratio (best spread of a few domains round the hue circle).
_ALPHAS = ((math.sqrt(5) - 1) / 2,) + tuple(math.sqrt(p) % 1.0 for p in (2, 3, 5, 7, 11, 13, 17, 19, 23))


@dataclass(frozen=True)
class CameraStyle:
    """Per-camera deviations from the domain style."""

    index: int
    gain: float
    cast: tuple[float, float, float]
    blur: float
    noise: float
    jpeg_delta: int
    light_angle: float           # direction of the light gradient (radians)
    light_strength: float        # relative brightness change across the image
    view_probs: tuple[float, float, float, float]   # front, back, left, right
    scale: float                 # mean person height / image height


@dataclass(frozen=True)
class DomainStyle:
    """How one domain renders (all values at ``style_strength`` applied)."""

    index: int
    name: str
    background: str
    season: str
    brightness: float
    cast: tuple[float, float, float]   # white-balance gains r, g, b
    gamma: float
    contrast: float
    saturation: float
    blur: float                        # box-blur radius in output pixels
    noise: float                       # sensor noise sigma (0..255 scale)
    jpeg_quality: int
    resolution: float                  # effective resolution as a fraction of the image size
    cameras: tuple[CameraStyle, ...]

    def to_json(self) -> dict:
        return asdict(self)


def _spread(k: int, j: int, offset: float) -> float:
    return ((k + 1) * _ALPHAS[j] + offset) % 1.0


def make_domain_style(cfg: SynthConfig, k: int) -> DomainStyle:
    """The style of domain ``k`` (deterministic in ``cfg.seed`` and ``k``)."""
    offsets = np.random.default_rng([cfg.seed, 11]).random(len(_ALPHAS))
    s = cfg.style_strength
    u = [_spread(k, j, float(offsets[j])) for j in range(len(_ALPHAS))]

    def lerp(neutral: float, lo: float, hi: float, q: float) -> float:
        return neutral + s * (lo + (hi - lo) * q - neutral)

    hue = 2 * math.pi * u[0]  # colour-cast direction on the hue circle
    cast_amount = 0.05 + 0.13 * u[1]
    cast = tuple(1.0 + s * cast_amount * math.cos(hue - c * 2 * math.pi / 3) for c in range(3))
    cameras = tuple(_camera_style(cfg, k, c) for c in range(cfg.num_cameras))
    season_offset = int(np.random.default_rng([cfg.seed, 12]).integers(len(SEASON_ORDER)))
    return DomainStyle(
        index=k,
        name=f"domain_{k}",
        background=cfg.background(k),
        season=SEASON_ORDER[(k + season_offset) % len(SEASON_ORDER)],
        brightness=lerp(1.0, 0.72, 1.22, u[2]),
        cast=tuple(round(c, 4) for c in cast),
        gamma=lerp(1.0, 0.78, 1.3, u[3]),
        contrast=lerp(1.0, 0.78, 1.22, u[4]),
        saturation=lerp(1.0, 0.55, 1.35, u[5]),
        blur=max(0.0, lerp(0.0, 0.0, 1.1, u[6])),
        noise=max(0.0, lerp(2.0, 1.0, 9.0, u[7])),
        jpeg_quality=int(round(lerp(92, 55, 95, u[8]))),
        resolution=min(1.0, lerp(1.0, 0.42, 1.0, u[9])),
        cameras=cameras,
    )


def _camera_style(cfg: SynthConfig, k: int, c: int) -> CameraStyle:
    rng = np.random.default_rng([cfg.seed, 13, k, c])
    cs = cfg.camera_strength
    facing = rng.random()
    # Cameras along the walking direction see fronts/backs, across it sides.
    if facing < 0.5:
        probs = np.array([0.45, 0.35, 0.1, 0.1])
    else:
        probs = np.array([0.15, 0.15, 0.35, 0.35])
    probs = probs * rng.uniform(0.7, 1.3, 4)
    return CameraStyle(
        index=c,
        gain=float(1.0 + cs * rng.uniform(-0.12, 0.12)),
        cast=tuple(float(1.0 + cs * v) for v in rng.uniform(-0.05, 0.05, 3)),
        blur=float(cs * rng.uniform(0.0, 0.45)),
        noise=float(1.0 + cs * rng.uniform(-0.25, 0.35)),
        jpeg_delta=int(round(cs * rng.uniform(-6, 6))),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light_strength=float(cs * rng.uniform(0.0, 0.22)),
        view_probs=tuple(float(p) for p in probs / probs.sum()),
        scale=float(rng.uniform(0.84, 0.93)),
    )


class Finisher:
    """Applies a domain/camera style to a rendered RGB image and encodes it as JPEG.

    Built once per (domain, camera) in each worker: it precomputes the colour lookup
    table, the light-gradient map and a bank of sensor noise, so finishing one image is
    a handful of C-level PIL calls plus one numpy pass.
    """

    def __init__(self, style: DomainStyle, camera: CameraStyle, size: tuple[int, int], seed: int):
        self.style, self.camera, self.size = style, camera, size
        w, h = size
        self.resolution = style.resolution
        self.blur = style.blur + camera.blur
        self.saturation = style.saturation
        self.quality = int(np.clip(style.jpeg_quality + camera.jpeg_delta, 35, 97))
        gains = [style.brightness * camera.gain * style.cast[i] * camera.cast[i] for i in range(3)]
        x = np.arange(256, dtype=np.float64) / 255.0
        lut: list[int] = []
        for g in gains:
            y = np.clip(x * g, 0, 1) ** style.gamma
            y = np.clip(0.5 + style.contrast * (y - 0.5), 0, 1)
            lut.extend(np.round(y * 255).astype(np.uint8).tolist())
        self.lut = lut
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        proj = ((xx / w - 0.5) * math.cos(camera.light_angle) + (yy / h - 0.5) * math.sin(camera.light_angle))
        self.light = (1.0 + camera.light_strength * 2 * proj)[..., None].astype(np.float32)
        sigma = style.noise * camera.noise
        rng = np.random.default_rng([seed, 14, style.index, camera.index])
        self.noise = np.round(rng.normal(0, sigma, (h * 2, w * 2, 3))).astype(np.int16)

    def finish(self, img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, bytes]:
        """Styled image and its JPEG bytes; ``rng`` draws the per-image jitter."""
        w, h = self.size
        illum = float(rng.uniform(0.94, 1.06))
        oy, ox = int(rng.integers(0, h)), int(rng.integers(0, w))
        if self.resolution < 0.97:  # low-resolution sensor: blur at its resolution, then upsample
            small = img.resize((max(8, round(w * self.resolution)), max(16, round(h * self.resolution))),
                               Image.BILINEAR, reducing_gap=None)
            if self.blur * self.resolution > 0.2:
                small = small.filter(ImageFilter.BoxBlur(self.blur * self.resolution))
            img = small.resize((w, h), Image.BILINEAR)
        elif self.blur > 0.2:
            img = img.filter(ImageFilter.BoxBlur(self.blur))
        img = img.point(self.lut)
        if abs(self.saturation - 1.0) > 0.02:
            img = ImageEnhance.Color(img).enhance(self.saturation)
        # Light gradient (fixed point, 1/128 steps) and sensor noise in integer arithmetic.
        gain = np.minimum(np.round(self.light * (illum * 128.0)), 256).astype(np.uint16)
        a = (np.asarray(img).astype(np.uint16) * gain) >> 7
        a = a.astype(np.int16) + self.noise[oy:oy + h, ox:ox + w]
        out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=self.quality)
        return out, buf.getvalue()
