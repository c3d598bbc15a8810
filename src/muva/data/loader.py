"""A torch ``Dataset`` over image records (+ pseudo part masks) and the data-loader builders.

Items are dictionaries ``{"image", "pid", "camid", "index", "valid", "mask"?}``.  Unreadable
images are handled by ``on_error``:

* ``"skip"`` (default): the bad file is recorded in :attr:`ReIDImageDataset.bad_files`.
  With ``substitute=True`` (training) it is replaced by another readable image of the same
  identity and training goes on; the run log lists the files.  With ``substitute=False``
  (evaluation) nothing is replaced: the item is served with ``valid=False`` (and a blank
  image) so that the evaluation drops it and lists it in its results — a query or gallery
  image is never stood in for by another one, which would change the metrics;
* ``"raise"``: a :class:`muva.data.records.DatasetError` naming the file.

:func:`scan_images` checks files up front (header read, threaded) so that a broken dataset is
reported before hours of training rather than in the middle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from muva.data.images import find_bad_images
from muva.data.records import DatasetError, ImageRecord

__all__ = ["ReIDImageDataset", "scan_images", "read_image", "collate"]


def read_image(path: str | Path):
    """Open an image as RGB PIL (fully decoded, so truncated files fail here)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def scan_images(records: Sequence[ImageRecord], workers: int = 4, progress: bool = False) -> dict[str, str]:
    """``{path: reason}`` of the records whose file is missing or does not open as an image."""
    return dict(find_bad_images([r.path for r in records], workers=workers, decode=False, progress=progress))


class ReIDImageDataset(Dataset):
    """Records → transformed image tensors with labels, camera ids and (optionally) part masks.

    Args:
        records: the images.
        transform: a :class:`muva.data.transforms.ReIDTransform` (or any callable
            ``(pil, masks, seed) -> (tensor, masks)``).
        labels: training labels (0..N-1) per record; defaults to ``record.pid``.
        masks: ``{path: bool R×L}`` pseudo masks; when given, every record needs one.
        on_error: ``"skip"`` or ``"raise"`` (see module doc).
        substitute: with ``"skip"``, replace an unreadable image by another of its identity
            (training) instead of serving it as ``valid=False`` (evaluation).

    Indexing accepts an ``int`` or an ``(int, augmentation_seed)`` pair from the sampler.
    """

    def __init__(self, records: Sequence[ImageRecord], transform, labels: Sequence[int] | None = None,
                 masks: Mapping[str, np.ndarray] | None = None, on_error: str = "skip", substitute: bool = True):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.records = list(records)
        self.transform = transform
        self.labels = np.asarray(labels if labels is not None else [r.pid for r in self.records], dtype=np.int64)
        self.camids = np.asarray([max(r.camid, 0) for r in self.records], dtype=np.int64)
        self.on_error = on_error
        self.substitute = bool(substitute)
        self.masks = masks
        if masks is not None:
            missing = [r.path for r in self.records if r.path not in masks]
            if missing:
                raise DatasetError(f"{len(missing)} image(s) have no pseudo mask, e.g. {missing[0]}; "
                                   "re-run the grounding for this dataset (muva ground ...)")
        self.bad_files: dict[str, str] = {}
        self._by_label: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels.tolist()):
            self._by_label.setdefault(lab, []).append(i)

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, i: int):
        """``(image, index it came from, valid)``."""
        path = self.records[i].path
        try:
            return read_image(path), i, True
        except Exception as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"
            if self.on_error == "raise":
                raise DatasetError(f"cannot read image {path}: {reason}") from exc
            self.bad_files[path] = reason
            if self.substitute:
                for j in self._by_label.get(int(self.labels[i]), []):
                    if j != i and self.records[j].path not in self.bad_files:
                        try:
                            return read_image(self.records[j].path), j, True
                        except Exception as exc2:  # noqa: BLE001
                            self.bad_files[self.records[j].path] = f"{type(exc2).__name__}: {exc2}"
            return Image.new("RGB", (64, 128)), i, False

    def __getitem__(self, item):
        index, seed = (item if isinstance(item, tuple) else (item, None))
        index = int(index)
        image, src, valid = self._load(index)
        masks = self.masks[self.records[src].path] if self.masks is not None else None
        tensor, masks = self.transform(image, masks, seed)
        out = {"image": tensor, "pid": int(self.labels[index]), "camid": int(self.camids[index]), "index": index,
               "valid": valid}
        if masks is not None:
            out["mask"] = torch.as_tensor(masks).bool()
        return out


def collate(items: list[dict]) -> dict:
    """Stack a list of items into a batch dictionary of tensors."""
    batch = {"image": torch.stack([it["image"] for it in items]),
             "pid": torch.tensor([it["pid"] for it in items], dtype=torch.long),
             "camid": torch.tensor([it["camid"] for it in items], dtype=torch.long),
             "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
             "valid": torch.tensor([bool(it.get("valid", True)) for it in items], dtype=torch.bool)}
    if "mask" in items[0]:
        batch["mask"] = torch.stack([it["mask"] for it in items])
    return batch
