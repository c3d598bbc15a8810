"""Import the MUVA authors' released mask pickles (image name → R×L additive mask).

The authors published, per dataset, a pickle mapping an image file name to a parts ×
patches additive attention mask (0 = the patch belongs to the part, −inf = it does not),
R = 3 (head, upper body, legs) over the 16×8 grid of a 256×128 input.  This expert
stores those masks *exactly* in the cache (``load_pseudo_masks`` returns them unchanged
for the same grid) together with a box per part — the bounding box of the part's
patches in image pixels — so ``stats`` / ``show`` / ``eval`` work as for other experts.

Tolerated value types: NumPy arrays, torch tensors, nested lists; shapes R×L, 1×R×L or
R×rows×cols; additive (0/−inf or 0/large negative) or boolean/0-1 masks (``kind``).
Keys are matched by file name (directories in the keys are ignored).

A part whose mask is **empty** stays empty, as in the reference (its part token then
attends only to itself and CLS, and its mask target is all zeros); its recorded box is
the prior's, marked with reason ``empty``, only so that ``show`` can draw something.  The
run reports how many parts were empty.  An image absent from the pickle (the reference
would fail on it) gets the prior's boxes and masks, with reason ``missing``.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from muva.data.parts import DEFAULT_PARTS
from muva.grounding.boxes import PartBox, prior_boxes
from muva.grounding.cache import CacheEntry
from muva.grounding.experts.base import GroundingExpert
from muva.grounding.experts.spec import option, register_expert
from muva.utils.errors import MuvaError


class MaskImportError(MuvaError, ValueError):
    """A mask pickle that cannot be read or does not fit the parts / grid."""


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float64)


def read_mask_pickle(path: str | Path) -> dict:
    """Load a mask pickle (a dict); torch tensors inside need torch, imported on demand."""
    path = Path(path)
    if not path.is_file():
        raise MaskImportError(f"mask pickle {path} does not exist")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
    except ModuleNotFoundError as exc:
        raise MaskImportError(f"{path} needs the module {exc.name!r} to unpickle (torch tensors: pip install torch)") from exc
    except Exception as exc:
        raise MaskImportError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict) or not obj:
        raise MaskImportError(f"{path} holds a {type(obj).__name__}, expected a non-empty dict image name → mask")
    return obj


def to_bool_masks(value, num_parts: int, grid: tuple[int, int], kind: str = "auto") -> np.ndarray:
    """One pickled mask → ``bool [R, rows*cols]`` (True = patch in part)."""
    arr = _to_numpy(value)
    rows, cols = grid
    if arr.ndim == 3 and arr.shape[0] == 1 and num_parts != 1:
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.shape[0] != num_parts:
        raise MaskImportError(f"mask of shape {arr.shape} does not hold {num_parts} parts (expected R×L, 1×R×L or R×rows×cols)")
    if arr.shape[1] != rows * cols:
        raise MaskImportError(f"mask has {arr.shape[1]} patches but the grid {rows}x{cols} has {rows * cols}; pass the right grid: -X grid=[ROWS,COLS] (or --grid ROWSxCOLS)")
    if kind == "auto":
        kind = "additive" if (np.isneginf(arr).any() or arr.min() < -1.0) else ("binary" if set(np.unique(arr)) <= {0.0, 1.0} else "additive")
        if kind == "binary" and not (arr == 1.0).any():
            kind = "additive"  # all zeros: additive "everything allowed"
    if kind == "additive":
        return arr > -1e4
    if kind == "binary":
        return arr > 0.5
    raise MaskImportError(f"unknown mask kind {kind!r} (auto, additive, binary)")


def mask_box(mask: np.ndarray, grid: tuple[int, int], width: int, height: int) -> tuple[float, float, float, float] | None:
    """Bounding box in image pixels of the patches of one part (None when empty)."""
    rows, cols = grid
    m = np.asarray(mask, dtype=bool).reshape(rows, cols)
    if not m.any():
        return None
    r = np.flatnonzero(m.any(axis=1))
    c = np.flatnonzero(m.any(axis=0))
    return (c[0] * width / cols, r[0] * height / rows, (c[-1] + 1) * width / cols, (r[-1] + 1) * height / rows)


@dataclass
class ImportOptions:
    """Options of the import expert."""

    masks: Path | None = option(None, "the authors' mask pickle (image name → R×L mask); required")
    grid: tuple[int, int] = option((16, 8), "patch grid [rows,cols] of the pickle's masks")
    kind: Literal["auto", "additive", "binary"] = option("auto", "mask values: additive (0/-inf), binary (0/1) or auto-detected")


_NEEDS_MASKS = "the import expert needs the authors' mask pickle: -X masks=PATH.pkl (or --masks PATH.pkl)"


@register_expert("import", aliases=("pickle", "authors"), summary="the MUVA authors' released mask pickles")
class ImportExpert(GroundingExpert):
    """Masks from the authors' pickle (``masks=PATH``) for the images of a dataset.

    Args:
        masks: path of the pickle.
        parts: the parts of the pickle's rows, in order (authors: head, upper_body, legs).
        grid: (rows, cols) of the pickle's patches (authors: 16×8).
        kind: ``auto`` | ``additive`` | ``binary``.
    """

    name = "import"
    batch_size = 256
    Options = ImportOptions

    @classmethod
    def check_options(cls, options: ImportOptions) -> None:
        if options.masks is None:
            raise MaskImportError(_NEEDS_MASKS)

    @classmethod
    def default_parts(cls, options: ImportOptions) -> tuple[str, ...]:
        """The rows of a released mask file: the authors' parts (head, upper_body, legs)."""
        return DEFAULT_PARTS

    def __init__(self, masks: str | Path | None = None, parts: Sequence[str] = DEFAULT_PARTS, grid: tuple[int, int] = (16, 8), kind: str = "auto", rules=None, fallback=None):
        super().__init__(parts, rules)  # the prior is the only fallback of imported masks
        if masks is None:
            raise MaskImportError(_NEEDS_MASKS)
        self.masks_path = Path(masks)
        self.grid = tuple(grid)
        self.kind = kind
        raw = read_mask_pickle(self.masks_path)
        self._by_name = {Path(str(k)).name: v for k, v in raw.items()}
        first = next(iter(self._by_name.values()))
        to_bool_masks(first, len(self.parts), self.grid, kind)  # fail early on a wrong layout
        self.empty_parts: Counter = Counter()  # part → images whose mask for it is empty (kept empty)
        self.missing_images = 0

    def describe(self) -> dict:
        return {**super().describe(), "masks": str(self.masks_path), "grid": list(self.grid), "count": len(self._by_name)}

    def ground(self, images: Sequence) -> list[dict[str, PartBox]]:  # pragma: no cover - entries() is the path used
        raise NotImplementedError("the import expert matches images by name: use entries(keys, images)")

    def entries(self, keys: Sequence[str], images: Sequence) -> list:
        out = []
        for key, image in zip(keys, images):
            w, h = image.size
            prior = prior_boxes(w, h, self.parts)
            value = self._by_name.get(Path(key).name)
            if value is None:
                self.missing_images += 1
                out.append(CacheEntry(key, "ok", w, h, {p: PartBox(b.box, b.score, b.source, "missing") for p, b in prior.items()}))
                continue
            masks = to_bool_masks(value, len(self.parts), self.grid, self.kind)
            boxes, kept = {}, {}
            for r, part in enumerate(self.parts):
                box = mask_box(masks[r], self.grid, w, h)
                if box is None:  # kept empty; the prior's box is recorded for drawing only
                    self.empty_parts[part] += 1
                    boxes[part] = PartBox(prior[part].box, 0.0, self.name, "empty")
                else:
                    boxes[part] = PartBox(box, 1.0, self.name, None)
                kept[part] = masks[r]
            out.append(CacheEntry(key, "ok", w, h, boxes, None, kept, self.grid))
        return out

    def notes(self) -> list[str]:
        lines = []
        if self.empty_parts:
            per = ", ".join(f"{p} {self.empty_parts[p]:,}" for p in self.parts if self.empty_parts[p])
            lines.append(f"{sum(self.empty_parts.values()):,} empty part mask(s) kept empty ({per})")
        if self.missing_images:
            lines.append(f"{self.missing_images:,} image(s) absent from {self.masks_path.name}: prior boxes and masks used")
        return lines
