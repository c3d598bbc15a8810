"""Transforms: resize/normalise, image and part masks flipped together, seeded randomness."""

import numpy as np
import pytest
import torch
from PIL import Image

from muva.data.transforms import ReIDTransform, TransformConfig, flip_masks


def _image():
    arr = np.zeros((64, 32, 3), dtype=np.uint8)
    arr[:, :16] = 255  # left half white
    return Image.fromarray(arr)


def _masks():
    m = np.zeros((2, 4 * 2), dtype=bool)  # grid 4x2
    m[0, [0, 2]] = True  # part 0 in the left column, rows 0-1
    m[1, [7]] = True  # part 1 bottom-right
    return m


def test_flip_masks_mirrors_columns():
    m = _masks()
    f = flip_masks(m, (4, 2))
    assert f[0].reshape(4, 2)[:, 1].tolist() == [True, True, False, False]
    assert f[1].reshape(4, 2)[3, 0]
    assert np.array_equal(flip_masks(f, (4, 2)), m)
    assert torch.equal(flip_masks(torch.as_tensor(m), (4, 2)), torch.as_tensor(f))
    with pytest.raises(ValueError):
        flip_masks(m, (3, 2))


def test_image_and_masks_flip_together():
    t = ReIDTransform((8, 4), mean=(0, 0, 0), std=(1, 1, 1), grid=(4, 2), train=True, cfg=TransformConfig(flip_p=0.5))
    flipped = kept = 0
    for seed in range(40):
        img, masks = t(_image(), _masks(), seed)
        assert img.shape == (3, 8, 4)
        left_white = img[0, :, 0].mean() > 0.5
        part0_left = bool(masks[0].reshape(4, 2)[0, 0])
        assert left_white == part0_left  # the mask follows the image
        flipped += not left_white
        kept += left_white
        again, masks2 = t(_image(), _masks(), seed)
        assert torch.equal(img, again) and torch.equal(masks, masks2)  # same seed, same result
    assert flipped > 5 and kept > 5


def test_eval_transform_is_deterministic_and_normalises():
    t = ReIDTransform((8, 4), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), train=False)
    img, masks = t(_image(), None, None)
    assert masks is None
    assert img.min() == pytest.approx(-1.0) and img.max() == pytest.approx(1.0)
    assert img[0, :, 0].mean() > 0  # never flipped


def test_crop_and_erasing_refused_with_masks_but_work_without():
    cfg = TransformConfig(flip_p=0.0, pad=2, random_crop=True, erasing_p=1.0)
    t = ReIDTransform((8, 4), mean=(0, 0, 0), std=(1, 1, 1), grid=(4, 2), train=True, cfg=cfg)
    with pytest.raises(ValueError, match="misalign"):
        t(_image(), _masks(), 0)
    imgs = [t(_image(), None, s)[0] for s in range(5)]
    assert all(i.shape == (3, 8, 4) for i in imgs)
    assert any((i == 0).all(0).any() for i in imgs)  # erased/padded pixels present


def test_bicubic_resize_to_input_size():
    t = ReIDTransform((256, 128), train=False)
    img, _ = t(Image.new("RGB", (64, 128), (10, 20, 30)))
    assert img.shape == (3, 256, 128)
