"""Shared helpers of the grounding tests: tiny fabricated datasets (no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Ground-truth person layout of the fabricated crops, as fractions of (W, H).
GT_FRACTIONS = {
    "head": (0.35, 0.02, 0.65, 0.16),
    "upper_body": (0.15, 0.16, 0.85, 0.55),
    "legs": (0.25, 0.55, 0.75, 0.93),
    "shoes": (0.25, 0.90, 0.75, 0.99),
}


def person_image(width: int = 64, height: int = 128, seed: int = 0) -> Image.Image:
    """A crude person: coloured rectangles at GT_FRACTIONS on a noisy background."""
    rng = np.random.default_rng(seed)
    arr = (rng.random((height, width, 3)) * 60 + 100).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    colors = {"head": (220, 180, 150), "upper_body": (200, 30, 30), "legs": (30, 30, 160), "shoes": (10, 10, 10)}
    for part, (x0, y0, x1, y1) in GT_FRACTIONS.items():
        d.rectangle([x0 * width, y0 * height, x1 * width - 1, y1 * height - 1], fill=colors[part])
    return img


def make_market(root: Path, n_train: int = 8, n_query: int = 2, n_gallery: int = 4, size=(64, 128), corrupt: int = 0) -> Path:
    """A tiny Market-1501-layout folder; ``corrupt`` train files hold garbage bytes."""
    folders = {"bounding_box_train": n_train, "query": n_query, "bounding_box_test": n_gallery}
    k = 0
    for folder, n in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pid = 1 + i // 2
            path = root / folder / f"{pid:04d}_c{1 + i % 2}s1_{k:06d}_00.jpg"
            person_image(*size, seed=k).save(path, quality=90)
            k += 1
    for i in range(corrupt):
        (root / "bounding_box_train" / f"{90 + i:04d}_c1s1_{900 + i:06d}_00.jpg").write_bytes(b"not a jpeg at all")
    return root


def write_parts_jsonl(root: Path, shift: float = 0.0) -> Path:
    """parts.jsonl (the synth format) for every image of a fabricated Market folder.

    ``shift`` moves every ground-truth box right by that fraction of the width.
    """
    lines = []
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        for path in sorted((root / folder).glob("*.jpg")):
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except OSError:
                continue
            boxes = {p: [(x0 + shift) * w, y0 * h, (x1 + shift) * w, y1 * h] for p, (x0, y0, x1, y1) in GT_FRACTIONS.items()}
            lines.append(json.dumps({"path": f"{folder}/{path.name}", "pid": int(path.name[:4]), "camid": 0, "width": w, "height": h, "boxes": boxes, "occluded": []}))
    out = root / "parts.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out
