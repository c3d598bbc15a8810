"""Part-mask pictures: predicted masks (per layer or final) and pseudo masks on images.

Masks are ``R × L`` per image (``L = rows·cols`` patches, row-major over the patch
grid), as probabilities (predicted) or booleans (pseudo).  Each part gets a colour; a
patch is tinted with the colours of the parts that contain it (probability > 0.5,
the threshold that gates MUVA's attention), outlined in the part colour, and the
probability is shown as the tint strength when ``soft=True``.

One panel per image: the input (resized to the model input), then one overlay per
requested layer (``final`` = the last layer, which gates the last block), then the
pseudo mask when given; a legend names the parts.  Panel size for ``n`` overlays with
``scale`` s on an ``H×W`` input::

    width  = 2·margin + (n+1)·s·W + n·gap
    height = 2·margin + title_h + s·H + legend_h
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from muva.data.parts import PARTS
from muva.data.synth.parts_file import read_parts_jsonl
from muva.grounding.masks import boxes_to_patch_masks
from muva.utils import draw as mask_draw
from muva.viz import draw

# Part name → overlay colour (a view of :attr:`muva.data.parts.Part.colour`).
PART_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType({p.name: p.colour for p in PARTS.values()})
# Colour of a name that is no registered part.
UNKNOWN_COLOUR = (255, 255, 255)


def part_colour(part: str) -> tuple[int, int, int]:
    """The overlay colour of a part (white for a name that is no registered part)."""
    record = PARTS.get(part)
    return record.colour if record is not None else UNKNOWN_COLOUR


@dataclass(frozen=True)
class MaskLayout:
    scale: int = 2
    gap: int = 6
    margin: int = 6
    title_h: int = 14
    legend_h: int = 16
    alpha: float = 0.55
    font_size: int = 10

    def size(self, n_overlays: int, input_size: tuple[int, int]) -> tuple[int, int]:
        h, w = input_size
        width = 2 * self.margin + (n_overlays + 1) * self.scale * w + n_overlays * self.gap
        return width, 2 * self.margin + self.title_h + self.scale * h + self.legend_h


patch_to_pixels = mask_draw.patch_to_pixels  # one implementation, shared with muva.grounding.views


def overlay(image, masks: np.ndarray, grid: tuple[int, int], parts: Sequence[str], *, alpha: float = 0.55, soft: bool = False, threshold: float = 0.5):
    """Tint ``image`` (PIL, any size) with part masks ``[R, L]`` in the parts' colours; a new RGB image."""
    masks = np.asarray(masks, dtype=np.float32)[: len(parts)]
    return mask_draw.overlay(image, masks, grid, [part_colour(p) for p in parts], alpha=alpha, soft=soft, threshold=threshold)


def select_layers(spec: str | Sequence[int], num_layers: int) -> list[int]:
    """``"final"`` → [last]; ``"all"`` → every layer; ``"1,6,12"`` or [1, 6, 12] → those (1-based).

    >>> select_layers("final", 12), select_layers("all", 3), select_layers("1,12", 12)
    ([11], [0, 1, 2], [0, 11])
    """
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("final", "last"):
            return [num_layers - 1]
        if s == "all":
            return list(range(num_layers))
        spec = [int(v) for v in s.split(",") if v.strip()]
    out = []
    for v in spec:
        if not 1 <= int(v) <= num_layers:
            raise ValueError(f"layer {v} out of range 1..{num_layers}")
        out.append(int(v) - 1)
    return out


def mask_panel(
    image,
    predicted: np.ndarray | None,
    grid: tuple[int, int],
    parts: Sequence[str],
    input_size: tuple[int, int],
    *,
    layers: Sequence[int] = (),
    pseudo: np.ndarray | None = None,
    layout: MaskLayout = MaskLayout(),
    soft: bool = False,
    name: str = "",
):
    """One picture: input, predicted masks of ``layers`` (0-based), pseudo mask.

    ``predicted`` is ``[layers, R, L]`` probabilities; ``pseudo`` is ``[R, L]``.
    """
    h, w = input_size
    s = layout.scale
    shown = Image.fromarray(np.asarray(image.convert("RGB").resize((w, h), Image.BICUBIC))).resize((w * s, h * s), Image.NEAREST)
    panels = [("input", shown)]
    n_layers = 0 if predicted is None else predicted.shape[0]
    for li in layers:
        title = "final" if li == n_layers - 1 and len(layers) == 1 else f"layer {li + 1}"
        panels.append((title, overlay(shown, predicted[li], grid, parts, alpha=layout.alpha, soft=soft)))  # type: ignore[index]
    if pseudo is not None:
        panels.append(("pseudo", overlay(shown, pseudo.astype(np.float32), grid, parts, alpha=layout.alpha)))
    canvas = Image.new("RGB", layout.size(len(panels) - 1, input_size), draw.WHITE)
    d = ImageDraw.Draw(canvas)
    f = draw.font(layout.font_size)
    y = layout.margin + layout.title_h
    for j, (title, pic) in enumerate(panels):
        x = layout.margin + j * (s * w + layout.gap)
        canvas.paste(pic, (x, y))
        d.text((x, layout.margin), draw.fit_text(title, s * w, layout.font_size), fill=draw.BLACK, font=f)
    ly = y + s * h + 2
    x = layout.margin
    for part in parts:
        colour = part_colour(part)
        d.rectangle([x, ly + 2, x + 9, ly + 11], fill=colour)
        d.text((x + 12, ly + 1), part, fill=draw.BLACK, font=f)
        x += 16 + int(draw.text_width(part, layout.font_size))
    if name:
        label = draw.fit_text(name, canvas.width - x - layout.margin, layout.font_size)
        d.text((max(x + 8, canvas.width - layout.margin - int(draw.text_width(label, layout.font_size))), ly + 1), label, fill=draw.GREY, font=f)
    return canvas


def masks_from_parts_file(path: str | Path, parts: Sequence[str], input_size: tuple[int, int], stride: int,
                          patch: int | None = None) -> dict[str, np.ndarray]:
    """Pseudo masks from a synthetic domain's ``parts.jsonl``: file name → ``bool [R, L]``.

    The file is read by :func:`muva.data.synth.parts_file.read_parts_jsonl` (a bad line is an
    error naming it); keys are both the ``<split>/<file>`` path in the file and the bare file name.
    """
    out: dict[str, np.ndarray] = {}
    for rec in read_parts_jsonl(path):
        m = boxes_to_patch_masks(rec.boxes, (rec.width, rec.height), input_size, stride, parts, patch=patch)
        out[rec.path] = m
        out[draw.basename(rec.path)] = m
    return out


def lookup_pseudo(pseudo: Mapping[str, np.ndarray] | None, path: str) -> np.ndarray | None:
    """Find an image's pseudo mask by full path, last two path components, or file name."""
    if not pseudo:
        return None
    p = Path(path)
    for key in (str(path), f"{p.parent.name}/{p.name}", p.name):
        if key in pseudo:
            return pseudo[key]
    return None


def visualize_masks(
    extractor,
    paths: Sequence[str],
    out_dir: str | Path,
    *,
    layers: str | Sequence[int] = "final",
    pseudo: Mapping[str, np.ndarray] | None = None,
    soft: bool = False,
    layout: MaskLayout = MaskLayout(),
) -> list[Path]:
    """Predict masks with ``extractor`` and write one panel PNG per image into ``out_dir``."""
    if not extractor.parts:
        raise ValueError("this model has no part tokens (a CLIP-ReID global model): there are no masks to show")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = extractor.extract_files(paths, return_masks=True, progress=False)
    chosen = select_layers(layers, int(result.masks.shape[1])) if result.masks is not None and len(result.paths) else []
    written = []
    for n, path in enumerate(result.paths):
        with Image.open(path) as im:
            panel = mask_panel(im, result.masks[n], extractor.grid, extractor.parts, extractor.input_size, layers=chosen,
                               pseudo=lookup_pseudo(pseudo, path), layout=layout, soft=soft, name=draw.basename(path))
        dest = out_dir / f"masks_{n:03d}_{Path(path).stem}.png"
        panel.save(dest)
        written.append(dest)
    return written
