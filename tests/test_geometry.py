"""The ViT patch grid (muva.utils.geometry.patch_grid): one function for the model and the masks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muva.utils.geometry import patch_grid

ROOT = Path(__file__).resolve().parents[1]


def _formula(h: int, w: int, stride: int, patch: int) -> tuple[int, int]:
    """The grid written out by hand: patches of ``patch`` pixels every ``stride`` pixels."""
    return (h - patch) // stride + 1, (w - patch) // stride + 1


def test_known_grids():
    assert patch_grid() == (16, 8)  # 256×128 at stride 16
    assert patch_grid((256, 128), 16) == (16, 8)
    assert patch_grid((384, 128), stride=16) == (24, 8)
    assert patch_grid((256, 128), stride=12, patch=16) == (21, 10)  # CLIP-ReID's overlapping patches
    assert patch_grid((128, 64), stride=12, patch=16) == (10, 5)
    assert patch_grid((224, 224), stride=14, patch=14) == (16, 16)
    assert patch_grid((256, 128), stride=16, patch=None) == patch_grid((256, 128), stride=16, patch=16)
    assert patch_grid((256, 128), stride=8, patch=0) == (32, 16)  # 0 = the stride, as None


@settings(max_examples=200, deadline=None)
@given(h=st.integers(16, 600), w=st.integers(16, 600), stride=st.integers(1, 16), extra=st.integers(0, 16))
def test_matches_the_formula_for_tiling_and_overlapping_patches(h, w, stride, extra):
    patch = min(stride + extra, 16)
    patch = max(patch, stride)
    rows, cols = patch_grid((h, w), stride=stride, patch=patch)
    assert (rows, cols) == _formula(h, w, stride, patch)
    # every patch lies inside the input, and one more would not
    assert (rows - 1) * stride + patch <= h < rows * stride + patch
    assert (cols - 1) * stride + patch <= w < cols * stride + patch


def test_patch_is_keyword_only():
    """The model once took (size, patch, stride) and the masks (size, stride, patch): neither order can slip in."""
    with pytest.raises(TypeError):
        patch_grid((256, 128), 16, 12)  # type: ignore[misc]


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match=r"input_size \(8, 64\) is smaller than the patch size 16"):
        patch_grid((8, 64), stride=16)
    with pytest.raises(ValueError, match="must be at least 1 pixel"):
        patch_grid((256, 128), stride=0, patch=16)


def test_model_and_masks_share_the_function():
    import muva.grounding
    import muva.grounding.masks
    import muva.models.vit
    from muva.utils import geometry

    assert muva.grounding.patch_grid is geometry.patch_grid
    assert muva.grounding.masks.patch_grid is geometry.patch_grid
    assert muva.models.vit.patch_grid is geometry.patch_grid
    assert "patch_grid" not in muva.models.vit.__all__


@pytest.mark.parametrize("stride,grid", [(16, (8, 4)), (12, (10, 5))])
def test_model_grid_equals_mask_grid(stride, grid):
    """Tiling (stride 16) and overlapping (stride 12 < patch 16) patches: the encoder and the pseudo masks agree."""
    import torch

    from muva.grounding.masks import boxes_to_patch_masks
    from muva.models import build_model, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(stride=stride), num_classes=0)
    assert (model.patch_size, model.stride) == (16, stride)
    assert model.grid == grid == patch_grid(model.input_size, stride=model.stride, patch=model.patch_size)
    masks = boxes_to_patch_masks({"head": (0, 0, 64, 128)}, (64, 128), model.input_size, model.stride, ("head",),
                                 patch=model.patch_size)
    assert masks.shape == (1, model.num_patches) == (1, grid[0] * grid[1])
    assert masks.all()


def test_imports_neither_torch_nor_numpy():
    code = "import sys, muva.utils.geometry; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
