"""Patch-grid geometry of a ViT input, shared by the model and the grounding masks.

A ViT cuts an ``H × W`` input into ``patch``-pixel squares taken every ``stride`` pixels.
With ``patch == stride`` (MUVA's default: 16) the squares tile the input; with
``stride < patch`` they overlap (CLIP-ReID's 16-pixel patches at stride 12).  The grid is
row-major, ``rows × cols`` patches.  Pure arithmetic: no torch, no NumPy.
"""

from __future__ import annotations

__all__ = ["patch_grid"]


def patch_grid(input_size: tuple[int, int] = (256, 128), stride: int = 16, *, patch: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the patches a ViT takes from an ``input_size`` image.

    Args:
        input_size: ``(H, W)`` of the model input, in pixels.
        stride: pixels between the top-left corners of neighbouring patches (conv1's stride).
        patch: side of one patch in pixels (conv1's kernel); ``None`` (or 0) means
            ``stride`` (patches that tile the input).  Keyword-only, so that ``(size, patch, stride)``
            and ``(size, stride, patch)`` cannot be confused.

    Returns ``((H - patch) // stride + 1, (W - patch) // stride + 1)``, which is
    ``(H // stride, W // stride)`` when ``patch == stride``.

    >>> patch_grid((256, 128))
    (16, 8)
    >>> patch_grid((256, 128), stride=12, patch=16)
    (21, 10)

    Raises ``ValueError`` for a stride or patch below 1, or an input smaller than one patch.
    """
    h, w = int(input_size[0]), int(input_size[1])
    p = int(patch or stride)
    if stride < 1 or p < 1:
        raise ValueError(f"patch size {p} and stride {stride} must be at least 1 pixel")
    if h < p or w < p:
        raise ValueError(f"input_size {tuple(input_size)} is smaller than the patch size {p}")
    return (h - p) // stride + 1, (w - p) // stride + 1
