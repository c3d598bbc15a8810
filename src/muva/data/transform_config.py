"""Training augmentation options (``data.transforms`` of an experiment config).

Kept apart from :mod:`muva.data.transforms` (which imports torch) so that the config
tree (:mod:`muva.engine.config`) stays importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TransformConfig"]


@dataclass
class TransformConfig:
    """Training augmentation options (``data.transforms``); see :mod:`muva.data.transforms`."""

    flip_p: float = 0.5
    pad: int = 0  # 10 for the CLIP-ReID baseline (with random crop)
    random_crop: bool = False
    erasing_p: float = 0.0  # 0.5 for the CLIP-ReID baseline
    interpolation: str = "bicubic"
