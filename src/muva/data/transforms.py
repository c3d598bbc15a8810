"""Image (+ part-mask) transforms for training and evaluation, on torchvision v2 functionals.

A pseudo mask is a boolean ``R × L`` array over the patch grid (``rows × cols``, row-major);
a horizontal flip of the image must flip every mask row of patches the same way, which
:class:`ReIDTransform` does in one call.  Randomness comes from an explicit per-sample seed
(supplied by :class:`muva.data.samplers.RandomIdentitySampler`), so augmentations are
reproducible whatever the number of loader workers and across ``--resume``.

Training (MUVA):   resize 256×128 bicubic → flip 0.5 (image and masks) → tensor → normalise.
Training (CLIP-ReID baseline): adds pad 10 + random crop and random erasing 0.5 (image only;
these options are refused together with part masks, which they would misalign).
Evaluation:        resize (bilinear: the model's ``test_interpolation``, as the reference)
                   → tensor → normalise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from muva.data.transform_config import TransformConfig

__all__ = ["TransformConfig", "ReIDTransform", "flip_masks", "build_transforms"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def flip_masks(masks: np.ndarray | torch.Tensor, grid: tuple[int, int]):
    """Mirror ``R × (rows·cols)`` patch masks left↔right (same type as the input)."""
    rows, cols = grid
    if masks.shape[-1] != rows * cols:
        raise ValueError(f"masks have {masks.shape[-1]} patches, grid {rows}x{cols} has {rows * cols}")
    shaped = masks.reshape(*masks.shape[:-1], rows, cols)
    flipped = shaped.flip(-1) if isinstance(shaped, torch.Tensor) else shaped[..., ::-1]
    return flipped.reshape(masks.shape) if isinstance(flipped, torch.Tensor) else np.ascontiguousarray(flipped).reshape(masks.shape)


class ReIDTransform:
    """Callable ``(pil_image, masks=None, seed=None) -> (tensor C×H×W, masks or None)``.

    Args:
        input_size: (H, W) of the network input.
        mean, std: backbone normalisation (CLIP's by default; MUVA's configs use 0.5/0.5).
        grid: patch grid (rows, cols) of the masks; needed when masks are given.
        train: apply the random augmentations of ``cfg``.
        interpolation: resize filter; ``None`` = ``cfg.interpolation`` (training's).
    """

    def __init__(self, input_size: Sequence[int] = (256, 128), mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, grid: tuple[int, int] | None = None, train: bool = False,
                 cfg: TransformConfig | None = None, interpolation: str | None = None):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.grid = tuple(grid) if grid else None
        self.train = train
        self.cfg = cfg or TransformConfig()
        name = interpolation or self.cfg.interpolation
        try:
            self.interpolation = InterpolationMode(name)
        except ValueError:
            raise ValueError(f"unknown interpolation {name!r}; use bicubic, bilinear or nearest") from None

    def geometric_with_masks_ok(self) -> bool:
        return not (self.train and (self.cfg.pad or self.cfg.random_crop))

    def __call__(self, image, masks=None, seed: int | None = None):
        gen = torch.Generator()
        gen.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,))))
        img = TF.pil_to_tensor(image) if not isinstance(image, torch.Tensor) else image
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        elif img.shape[0] == 4:
            img = img[:3]
        img = TF.resize(img, list(self.input_size), interpolation=self.interpolation, antialias=True)
        if masks is not None:
            masks = torch.as_tensor(np.asarray(masks))
        if self.train:
            if torch.rand((), generator=gen) < self.cfg.flip_p:
                img = TF.horizontal_flip(img)
                if masks is not None:
                    if self.grid is None:
                        raise ValueError("ReIDTransform needs grid=(rows, cols) to flip part masks")
                    masks = flip_masks(masks, self.grid)
            if self.cfg.pad or self.cfg.random_crop:
                if masks is not None:
                    raise ValueError("pad/random crop would misalign the part masks; use them only for the global baseline")
                img = self._pad_crop(img, gen)
        out = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), self.mean, self.std)
        if self.train and self.cfg.erasing_p > 0 and torch.rand((), generator=gen) < self.cfg.erasing_p:
            out = self._erase(out, gen)
        return out, masks

    def _pad_crop(self, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = int(self.cfg.pad)
        if p:
            img = TF.pad(img, [p, p, p, p], fill=0)
        h, w = self.input_size
        top = int(torch.randint(0, img.shape[1] - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, img.shape[2] - w + 1, (1,), generator=gen))
        return TF.crop(img, top, left, h, w)

    def _erase(self, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random erasing (Zhong et al.): area 2–40 %, aspect 0.3–3.3, filled with zeros (= the mean)."""
        _, h, w = img.shape
        area = h * w
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(0.02, 0.4, generator=gen))
            log_r = float(torch.empty(()).uniform_(np.log(0.3), np.log(1 / 0.3), generator=gen))
            eh = int(round((target * np.exp(log_r)) ** 0.5))
            ew = int(round((target / np.exp(log_r)) ** 0.5))
            if 0 < eh < h and 0 < ew < w:
                i = int(torch.randint(0, h - eh + 1, (1,), generator=gen))
                j = int(torch.randint(0, w - ew + 1, (1,), generator=gen))
                return TF.erase(img, i, j, eh, ew, torch.zeros(1), inplace=False)
        return img


def build_transforms(input_size, mean, std, grid=None, cfg: TransformConfig | None = None,
                     test_interpolation: str = "bilinear"):
    """``(train_transform, eval_transform)`` for one model configuration.

    Training resizes with ``cfg.interpolation`` (bicubic), evaluation — test images, stage-1
    features and memory rebuilds — with ``test_interpolation`` (the model's, bilinear).
    """
    return (ReIDTransform(input_size, mean, std, grid, train=True, cfg=cfg),
            ReIDTransform(input_size, mean, std, grid, train=False, cfg=cfg, interpolation=test_interpolation))
