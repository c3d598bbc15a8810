"""Boxes: clipping, validation with fallback reasons; masks: rasterisation and flips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muva.grounding.boxes import PartBox, Proposal, box_iou, clip_box, order_violations, validate_parts
from muva.grounding.experts.prior import prior_boxes
from muva.grounding.masks import (
    boxes_to_patch_masks,
    flip_patch_masks,
    from_additive,
    to_additive,
)
from muva.utils.geometry import patch_grid

PARTS = ("head", "upper_body", "legs")


def test_clip_box_orders_and_clips():
    assert clip_box((-5, 300, 140, -2), 128, 256) == (0.0, 0.0, 128.0, 256.0)
    assert clip_box((10, 20, 5, 8), 128, 256) == (5.0, 8.0, 10.0, 20.0)


def test_box_iou_known_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def _fallback(w=128, h=256):
    return prior_boxes(w, h, PARTS)


def test_validate_keeps_good_boxes_and_clips():
    props = {"head": Proposal((40, -3, 80, 40), 0.9), "upper_body": Proposal((10, 45, 130, 140), 0.8), "legs": Proposal((20, 140, 100, 250), 0.7)}
    out = validate_parts(props, PARTS, 128, 256, source="pose", fallback=_fallback())
    assert all(b.source == "pose" and b.reason is None for b in out.values())
    assert out["head"].box == (40.0, 0.0, 80.0, 40.0)
    assert out["upper_body"].box[2] == 128.0
    assert out["legs"].score == pytest.approx(0.7)


@pytest.mark.parametrize(
    "box, reason",
    [
        (None, "missing"),
        ((float("nan"), 0, 10, 10), "missing"),
        ((200, 10, 260, 40), "outside"),
        ((50, 10, 50, 40), "empty"),
        ((50, 10, 52, 12), "tiny"),
        ((0, 0, 128, 120), "huge"),
    ],
)
def test_validate_replaces_bad_head_with_reason(box, reason):
    props = {"head": Proposal(box), "upper_body": Proposal((10, 45, 120, 140)), "legs": Proposal((20, 140, 100, 250))}
    out = validate_parts(props, PARTS, 128, 256, source="mllm", fallback=_fallback())
    assert out["head"].source == "prior" and out["head"].reason == reason
    assert out["head"].box == _fallback()["head"].box
    assert out["legs"].source == "mllm"


def test_head_below_legs_is_an_order_violation():
    props = {"head": Proposal((40, 200, 80, 250)), "upper_body": Proposal((10, 45, 120, 140)), "legs": Proposal((20, 140, 100, 240))}
    out = validate_parts(props, PARTS, 128, 256, source="mllm", fallback=_fallback())
    assert out["head"].reason == "order"
    assert out["upper_body"].reason is None and out["legs"].reason is None
    assert order_violations({"head": (0, 0, 1, 1), "legs": (0, 5, 1, 6)}) == set()


def test_proposal_reason_is_kept():
    out = validate_parts({"head": Proposal(None, 0.0, "unparsable")}, PARTS, 128, 256, source="mllm", fallback=_fallback())
    assert out["head"].reason == "unparsable" and out["legs"].reason == "missing"


def test_partbox_json_roundtrip():
    b = PartBox((1.234, 2.0, 30.5, 40.25), 0.5, "pose", "order")
    assert PartBox.from_json(b.to_json()) == PartBox((1.23, 2.0, 30.5, 40.25), 0.5, "pose", "order")


# ----------------------------------------------------------------------------- masks
def test_patch_grid_default_and_overlapping():
    assert patch_grid((256, 128), 16) == (16, 8)
    assert patch_grid((384, 128), 16) == (24, 8)
    assert patch_grid((256, 128), 12, patch=16) == (21, 10)


def test_full_image_box_covers_every_patch():
    m = boxes_to_patch_masks({"head": (0, 0, 64, 128)}, (64, 128), parts=("head",))
    assert m.shape == (1, 128) and m.all()


def test_min_fraction_rule_on_half_patches():
    # Image = input size (128x256), so boxes are in input pixels.  Box covering x in [0, 24):
    # column 0 fully, column 1 half → in with 0.5, out with 0.6.
    box = {"head": (0, 0, 24, 16)}
    m50 = boxes_to_patch_masks(box, (128, 256), parts=("head",), min_fraction=0.5).reshape(16, 8)
    m60 = boxes_to_patch_masks(box, (128, 256), parts=("head",), min_fraction=0.6).reshape(16, 8)
    assert m50[0, :2].all() and m50.sum() == 2
    assert m60[0, 0] and m60.sum() == 1


def test_scaling_from_image_to_input():
    # A 64x128 image is scaled by 2: box x in [16, 32) → input [32, 64) = columns 2, 3.
    m = boxes_to_patch_masks({"legs": (16, 64, 32, 128)}, (64, 128), parts=("legs",)).reshape(16, 8)
    rows, cols = np.nonzero(m)
    assert set(cols) == {2, 3} and set(rows) == set(range(8, 16))


def test_tiny_box_never_gives_an_empty_mask():
    m = boxes_to_patch_masks({"head": (70, 3, 72, 5)}, (128, 256), parts=("head",)).reshape(16, 8)
    assert m.sum() == 1 and m[0, 4]
    # Centre exactly on the border of columns 3 and 4: both patches (mirror-symmetric).
    m = boxes_to_patch_masks({"head": (63, 3, 65, 5)}, (128, 256), parts=("head",)).reshape(16, 8)
    assert m.sum() == 2 and m[0, 3] and m[0, 4]


def test_prior_masks_follow_part_order_and_are_nonempty():
    boxes = prior_boxes(128, 256, PARTS)
    m = boxes_to_patch_masks(boxes, (128, 256))
    assert m.shape == (3, 128) and m.any(axis=1).all()
    centre_rows = [np.nonzero(row.reshape(16, 8))[0].mean() for row in m]
    assert centre_rows == sorted(centre_rows)


def test_missing_part_is_an_error():
    with pytest.raises(KeyError, match="legs"):
        boxes_to_patch_masks({"head": (0, 0, 5, 5)}, (128, 256), parts=("head", "legs"))


def test_additive_roundtrip():
    m = np.array([[True, False], [False, True]])
    add = to_additive(m)
    assert add[0, 0] == 0 and np.isneginf(add[0, 1])
    assert (from_additive(add) == m).all()
    assert (from_additive(np.array([0.0, -1e9])) == [True, False]).all()


def test_flip_of_mask_is_not_identity_and_involutive():
    m = boxes_to_patch_masks({"head": (0, 0, 40, 40)}, (128, 256), parts=("head",))
    f = flip_patch_masks(m, (16, 8))
    assert not (f == m).all()
    assert (flip_patch_masks(f, (16, 8)) == m).all()
    with pytest.raises(ValueError):
        flip_patch_masks(m, (8, 8))


@settings(max_examples=150, deadline=None)
@given(
    x0=st.floats(0, 127), y0=st.floats(0, 255), w=st.floats(0.5, 128), h=st.floats(0.5, 256),
    frac=st.sampled_from([0.25, 0.5, 0.75, 1.0]), stride=st.sampled_from([8, 16, 32]),
)
def test_flip_commutes_with_rasterisation(x0, y0, w, h, frac, stride):
    """Mirroring the box (image flip) gives the mirrored mask — for any box, fraction, stride."""
    W, H = 128, 256
    box = (x0, y0, min(W, x0 + w), min(H, y0 + h))
    mirrored = (W - box[2], box[1], W - box[0], box[3])
    grid = patch_grid((H, W), stride)
    m = boxes_to_patch_masks({"legs": box}, (W, H), (H, W), stride, ("legs",), frac)
    mf = boxes_to_patch_masks({"legs": mirrored}, (W, H), (H, W), stride, ("legs",), frac)
    assert m.any()
    assert (flip_patch_masks(m, grid) == mf).all()


@settings(max_examples=100, deadline=None)
@given(x0=st.floats(0, 120), y0=st.floats(0, 250), w=st.floats(1, 128), h=st.floats(1, 256))
def test_mask_patches_meet_the_fraction(x0, y0, w, h):
    box = (x0, y0, x0 + w, y0 + h)
    m = boxes_to_patch_masks({"head": box}, (128, 256), parts=("head",)).reshape(16, 8)
    for r, c in zip(*np.nonzero(m)):
        ix = max(0, min(box[2], (c + 1) * 16) - max(box[0], c * 16))
        iy = max(0, min(box[3], (r + 1) * 16) - max(box[1], r * 16))
        assert ix * iy >= 0.5 * 256 - 1e-6 or m.sum() <= 4  # else: the centre-patch fallback
