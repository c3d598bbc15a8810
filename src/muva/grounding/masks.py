"""Part boxes → patch masks over the ViT grid (the pseudo labels MUVA trains on).

The model resizes every crop to ``input_size`` = (H, W) (default 256×128) and cuts it in
``stride``-pixel patches (default 16 → a 16×8 grid, L = 128 patches, row-major).  A patch
belongs to a part when at least ``min_fraction`` (default 0.5) of its area lies inside
the part's box (box scaled from image pixels to input pixels).  A part mask is never
empty: when no patch reaches the fraction, the patch under the box centre is used (both
patches when the centre lies on their shared border, so masks stay mirror-symmetric).

Masks are boolean arrays ``[R, rows*cols]`` (R = number of parts, True = patch in part).
MUVA's additive attention form is ``0`` where True and ``-inf`` where False
(:func:`to_additive` / :func:`from_additive`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from muva.data.parts import DEFAULT_PARTS, check_parts
from muva.grounding.boxes import prior_boxes
from muva.grounding.cache import GroundingCache, GroundingCacheError, MissingPartsError
from muva.utils.geometry import patch_grid


def _coverage(lo: float, hi: float, starts: np.ndarray, size: float) -> np.ndarray:
    """Length of overlap of [lo, hi) with each [start, start + size), as a fraction of size."""
    return np.clip(np.minimum(hi, starts + size) - np.maximum(lo, starts), 0.0, None) / size


def _under(v: float, stride: int, n: int) -> list[int]:
    """Patch indices whose closed span [k*stride, (k+1)*stride] contains v (two on a border).

    "On a border" allows 1e-9 of a patch: a box and its mirror image (``W - x``) differ by
    rounding, and must still get mirrored patches.
    """
    k = v / stride
    near = round(k)
    if abs(k - near) <= 1e-9:
        idx = {int(near), int(near) - 1}
    else:
        idx = {int(np.floor(k))}
    return sorted(i for i in idx if 0 <= i < n) or [min(max(int(k), 0), n - 1)]


def boxes_to_patch_masks(
    boxes: Mapping[str, Sequence[float]],
    image_size: tuple[int, int],
    input_size: tuple[int, int] = (256, 128),
    stride: int = 16,
    parts: Sequence[str] = DEFAULT_PARTS,
    min_fraction: float = 0.5,
    patch: int | None = None,
) -> np.ndarray:
    """Rasterise part boxes into patch masks ``bool [R, rows*cols]``.

    Args:
        boxes: part → (x0, y0, x1, y1) in pixels of the original image (x1/y1 exclusive);
            a :class:`~muva.grounding.boxes.PartBox` is accepted too.
        image_size: (W, H) of the original image.
        input_size: (H, W) the model resizes the image to.
        stride: patch stride in input pixels; ``patch`` is the patch size (default = stride).
        parts: parts, in the order of the mask rows.
        min_fraction: share of a patch's area that must lie in the box.
    """
    parts = check_parts(parts)
    iw, ih = image_size
    H, W = input_size
    p = patch or stride
    rows, cols = patch_grid(input_size, stride, patch=p)
    sx, sy = W / float(iw), H / float(ih)
    ys = np.arange(rows, dtype=np.float64) * stride
    xs = np.arange(cols, dtype=np.float64) * stride
    out = np.zeros((len(parts), rows * cols), dtype=bool)
    for r, part in enumerate(parts):
        if part not in boxes:
            raise KeyError(f"no box for part {part!r} (have {', '.join(boxes)})")
        b = boxes[part]
        b = getattr(b, "box", b)
        x0, y0, x1, y1 = float(b[0]) * sx, float(b[1]) * sy, float(b[2]) * sx, float(b[3]) * sy
        frac = np.outer(_coverage(y0, y1, ys, p), _coverage(x0, x1, xs, p)).ravel()
        mask = frac >= min_fraction - 1e-9
        if not mask.any():
            for row in _under(min(max((y0 + y1) / 2.0, 0.0), float(H)), stride, rows):
                for col in _under(min(max((x0 + x1) / 2.0, 0.0), float(W)), stride, cols):
                    mask[row * cols + col] = True
        out[r] = mask
    return out


def flip_patch_masks(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mirror masks ``[..., rows*cols]`` left-right, matching a horizontal image flip."""
    rows, cols = grid
    m = np.asarray(masks)
    if m.shape[-1] != rows * cols:
        raise ValueError(f"masks have {m.shape[-1]} patches, grid {rows}x{cols} has {rows * cols}")
    return m.reshape(*m.shape[:-1], rows, cols)[..., ::-1].reshape(m.shape).copy()


def to_additive(masks: np.ndarray) -> np.ndarray:
    """Boolean masks → MUVA's additive form (0 where True, -inf where False), float32."""
    return np.where(np.asarray(masks, dtype=bool), 0.0, -np.inf).astype(np.float32)


def from_additive(mask: np.ndarray, threshold: float = -1e4) -> np.ndarray:
    """Additive masks (0 / -inf, or 0 / large negative) → boolean (True where allowed)."""
    return np.asarray(mask, dtype=np.float64) > threshold


def load_pseudo_masks(
    dataset_or_records,
    cache_path: str | Path,
    parts: Sequence[str] = DEFAULT_PARTS,
    input_size: tuple[int, int] = (256, 128),
    stride: int = 16,
    min_fraction: float = 0.5,
    patch: int | None = None,
    missing: str = "error",
) -> dict[str, np.ndarray]:
    """Pseudo masks for training: image path → ``bool [R, rows*cols]`` from a grounding cache.

    Args:
        dataset_or_records: a :class:`~muva.data.ReIDDataset` (its train split is used), or
            an iterable of records / paths.
        cache_path: the cache written by ``muva ground``.  A missing file is an error that
            prints the command to run.
        missing: what to do with images absent from the cache or unreadable: ``"error"``
            (raise, naming them and the command), ``"prior"`` (use the body prior) or
            ``"skip"`` (leave them out of the result).

    Entries imported from the authors' pickles carry exact masks; they are used as they
    are when their grid matches, otherwise their boxes are rasterised like any other.
    """
    parts = check_parts(parts)
    if missing not in ("error", "prior", "skip"):
        raise ValueError(f"missing must be 'error', 'prior' or 'skip', not {missing!r}")
    records = dataset_or_records.train if hasattr(dataset_or_records, "train") else dataset_or_records
    paths = [str(getattr(r, "path", r)) for r in records]
    cache_path = Path(cache_path)
    if not cache_path.is_file():
        raise GroundingCacheError(
            f"grounding cache {cache_path} does not exist. Create it with:\n"
            f"  muva ground run DATASET --expert pose --out {cache_path}\n"
            "(DATASET = the dataset's folder or registered name; --expert prior needs no model)."
        )
    grid = patch_grid(input_size, stride, patch=patch)
    out: dict[str, np.ndarray] = {}
    absent: list[str] = []
    unreadable = 0
    with GroundingCache.open(cache_path, readonly=True) as cache:
        have = cache.parts()
        lacking = [p for p in parts if p not in have]
        if lacking:
            raise MissingPartsError(
                f"cache {cache_path} holds parts {', '.join(have)} but {', '.join(lacking)} were asked for; "
                f"re-run muva ground with --parts {','.join(parts)}", have, lacking
            )
        for path in paths:
            entry = cache.get(path)
            if entry is None or entry.status != "ok":
                if missing == "skip":
                    continue
                if missing == "error":
                    absent.append(path)
                    unreadable += entry is not None
                    continue
                try:
                    with Image.open(path) as im:
                        size = im.size
                except OSError:
                    size = (input_size[1], input_size[0])
                out[path] = boxes_to_patch_masks(prior_boxes(*size, parts), size, input_size, stride, parts, min_fraction, patch)
                continue
            exact = entry.patch_masks(parts, grid)
            if exact is not None:
                out[path] = exact
            else:
                out[path] = boxes_to_patch_masks(entry.boxes, (entry.width, entry.height), input_size, stride, parts, min_fraction, patch)
    if absent:
        shown = ", ".join(absent[:5]) + (f", … ({len(absent) - 5} more)" if len(absent) > 5 else "")
        raise GroundingCacheError(
            f"{len(absent)} image(s) have no usable entry in {cache_path} ({len(absent) - unreadable} absent, "
            f"{unreadable} unreadable): {shown}. Absent ones: resume the run (muva ground run DATASET --out {cache_path}); "
            "unreadable ones: fix or drop the files, or pass missing='prior' / 'skip'."
        )
    return out


def masks_for_paths(masks: Mapping[str, np.ndarray], paths: Iterable[str]) -> np.ndarray:
    """Stack the masks of ``paths`` into ``[N, R, L]`` (KeyError naming the first absent path)."""
    return np.stack([masks[str(p)] for p in paths])
