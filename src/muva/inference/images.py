"""Image loading and preprocessing for inference.

One preprocessing rule for every input type and every backend (PyTorch or ONNX
Runtime), so that features of the same picture agree however it was passed:

1. decode to RGB (file paths, PIL images) or take the pixels as given (numpy arrays,
   tensors; ``uint8`` in 0..255 or float in 0..1);
2. resize to the model's input size ``(H, W)`` with the model's test interpolation
   (``model.test_interpolation``, bilinear by default as the reference; skipped when the
   image already has that size);
3. scale to 0..1 and normalise per channel with the model's ``mean`` / ``std``;
4. lay out as ``float32`` ``C×H×W``.

Accepted layouts: PIL images; numpy ``H×W×3`` / ``H×W`` (grey) / ``N×H×W×3``; torch
``3×H×W`` / ``N×3×H×W``.  A numpy array whose first axis is 3 and last axis is not is
read as ``3×H×W`` too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

PathLike = (str, os.PathLike)
_PIL_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing of one model: input size ``(H, W)``, per-channel mean/std and resize filter.

    >>> pre = Preprocess((8, 4), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = pre(np.full((16, 8, 3), 255, dtype=np.uint8))
    >>> x.shape, float(x.min()), float(x.max())
    ((3, 8, 4), 1.0, 1.0)
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use {', '.join(_PIL_FILTERS)}")

    def _resize_tensor(self, t):
        mode = self.interpolation
        extra = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        return torch.nn.functional.interpolate(t, size=self.input_size, mode=mode, **extra)

    @property
    def height(self) -> int:
        return int(self.input_size[0])

    @property
    def width(self) -> int:
        return int(self.input_size[1])

    def _normalise(self, arr: np.ndarray) -> np.ndarray:
        """``H×W×3`` float in 0..1 → normalised ``3×H×W`` float32."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = (arr.astype(np.float32, copy=False) - mean) / std
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def pil(self, image) -> np.ndarray:
        """A PIL image → normalised ``3×H×W`` float32."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), getattr(Image, _PIL_FILTERS[self.interpolation]))
        return self._normalise(np.asarray(image, dtype=np.float32) * (1.0 / 255.0))

    def path(self, path: str | os.PathLike) -> np.ndarray:
        """Decode an image file and preprocess it (raises ``OSError`` when unreadable)."""
        with Image.open(path) as im:
            return self.pil(im.convert("RGB"))

    def array(self, arr: np.ndarray) -> np.ndarray:
        """One ``H×W×3`` / ``H×W`` / ``3×H×W`` numpy image → normalised ``3×H×W``."""
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3:
            raise ValueError(f"expected an H×W×3 image array, got shape {arr.shape}")
        if arr.shape[-1] != 3 and arr.shape[0] == 3:
            arr = arr.transpose(1, 2, 0)
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.shape[-1] != 3:
            raise ValueError(f"expected 3 colour channels, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            if arr.shape[:2] != (self.height, self.width):
                return self.pil(Image.fromarray(np.ascontiguousarray(arr)))
            return self._normalise(arr.astype(np.float32) * (1.0 / 255.0))
        arr = arr.astype(np.float32)
        if arr.shape[:2] != (self.height, self.width):
            t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
            arr = self._resize_tensor(t)[0].clamp_(0, 1).numpy().transpose(1, 2, 0)
        return self._normalise(arr)

    def tensor(self, t) -> "Any":
        """A ``N×3×H×W`` torch tensor (uint8 or float 0..1) → normalised float32 tensor."""
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        else:
            t = t.float()
        if tuple(t.shape[-2:]) != (self.height, self.width):
            t = self._resize_tensor(t).clamp_(0, 1)
        mean = torch.tensor(self.mean, dtype=t.dtype, device=t.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=t.dtype, device=t.device).view(1, 3, 1, 1)
        return (t - mean) / std

    def __call__(self, item: Any) -> np.ndarray:
        """Preprocess one image of any accepted single-image type into ``3×H×W``."""
        if isinstance(item, PathLike):
            return self.path(item)
        if isinstance(item, np.ndarray):
            return self.array(item)
        if _is_pil(item):
            return self.pil(item)
        if _is_tensor(item):
            return self.tensor(item[None] if item.ndim == 3 else item)[0].cpu().numpy()
        raise TypeError(f"cannot read an image from {type(item).__name__}; pass a path, a PIL image, a numpy array or a tensor")


def _is_pil(obj: Any) -> bool:
    return isinstance(obj, Image.Image)


def _is_tensor(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor)


def split_inputs(inputs: Any) -> tuple[list[Any] | None, Any, bool]:
    """Classify extractor inputs.

    Returns ``(items, batch_tensor, single)``: either a list of single images
    (``items``) or one already-batched ``N×3×H×W`` tensor (``batch_tensor``); ``single``
    tells whether the caller passed one image (the result then drops the batch axis).
    """
    if isinstance(inputs, PathLike) or _is_pil(inputs):
        return [inputs], None, True
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            return list(inputs), None, False
        return [inputs], None, True
    if _is_tensor(inputs):
        if inputs.ndim == 4:
            return None, inputs, False
        if inputs.ndim == 3:
            return None, inputs[None], True
        raise ValueError(f"expected a 3×H×W or N×3×H×W tensor, got shape {tuple(inputs.shape)}")
    if isinstance(inputs, Sequence) or hasattr(inputs, "__iter__"):
        items = list(inputs)
        return items, None, False
    raise TypeError(f"cannot read images from {type(inputs).__name__}")


class ImageFiles:
    """A map-style dataset of image files for ``torch.utils.data.DataLoader``.

    Item ``i`` is ``(image 3×H×W float32, i, error message or "")``; an unreadable file
    gives a zero image and its error, so one bad file never stops a long extraction.
    """

    def __init__(self, paths: Sequence[str | Path], preprocess: Preprocess):
        self.paths = [str(p) for p in paths]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.preprocess.path(self.paths[i]), i, ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure marks the file bad
            blank = np.zeros((3, self.preprocess.height, self.preprocess.width), dtype=np.float32)
            return blank, i, f"{type(exc).__name__}: {exc}"


def collate_files(batch):
    """Collate ``ImageFiles`` items into (tensor N×3×H×W, index list, error list)."""
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    return images, [b[1] for b in batch], [b[2] for b in batch]
