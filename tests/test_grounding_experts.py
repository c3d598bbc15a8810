"""Experts: prior, pose (keypoint mapping without the model; the model when available),
the MLLM on a tiny random Qwen2.5-VL, and the import of mask pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from test_grounding_common import person_image

from muva.grounding.experts import EXPERTS, build_expert
from muva.grounding.experts.pose import (
    L_ANKLE, L_EAR, L_EYE, L_HIP, L_KNEE, L_SHOULDER, NOSE, R_ANKLE, R_EAR, R_EYE, R_HIP, R_KNEE, R_SHOULDER,
    L_HEEL, R_HEEL, L_TOE, R_TOE, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST,
    PoseModelError, find_pose_model, keypoints_to_boxes, letterbox,
)
from muva.grounding.experts.prior import PRIOR_FRACTIONS, prior_boxes

PARTS4 = ("head", "upper_body", "legs", "shoes")


def test_registry_names_and_aliases():
    assert EXPERTS.names() == ["gdino", "import", "mllm", "pose", "prior"]
    assert EXPERTS.canonical("blazepose") == "pose"
    with pytest.raises(KeyError, match="Did you mean 'pose'"):
        EXPERTS.get("poze")


def test_prior_scales_with_the_crop():
    b = prior_boxes(64, 128, PARTS4)
    for part, (fx0, fy0, fx1, fy1) in PRIOR_FRACTIONS.items():
        assert b[part].box == pytest.approx((fx0 * 64, fy0 * 128, fx1 * 64, fy1 * 128))
        assert b[part].source == "prior"
    out = build_expert("prior", parts=PARTS4).ground([person_image(64, 128)])
    assert set(out[0]) == set(PARTS4) and all(v.reason is None for v in out[0].values())


# ----------------------------------------------------------------------------- pose mapping (no model)
def skeleton(width=128, height=256):
    """An upright frontal person's 33 keypoints in pixels, all visible."""
    k = np.zeros((33, 2))
    cx = width / 2
    pts = {
        NOSE: (cx, 22), L_EYE: (cx + 4, 18), R_EYE: (cx - 4, 18), L_EAR: (cx + 9, 20), R_EAR: (cx - 9, 20),
        L_SHOULDER: (cx + 22, 50), R_SHOULDER: (cx - 22, 50), L_ELBOW: (cx + 28, 85), R_ELBOW: (cx - 28, 85),
        L_WRIST: (cx + 30, 118), R_WRIST: (cx - 30, 118), L_HIP: (cx + 14, 125), R_HIP: (cx - 14, 125),
        L_KNEE: (cx + 15, 185), R_KNEE: (cx - 15, 185), L_ANKLE: (cx + 15, 235), R_ANKLE: (cx - 15, 235),
        L_HEEL: (cx + 14, 242), R_HEEL: (cx - 14, 242), L_TOE: (cx + 22, 246), R_TOE: (cx - 22, 246),
    }
    for i in range(11):
        k[i] = (cx, 20)
    for i, p in pts.items():
        k[i] = p
    return k, np.ones(33)


def test_keypoints_map_to_ordered_plausible_boxes():
    k, v = skeleton()
    out = keypoints_to_boxes(k, v, 128, 256, PARTS4)
    head, ub, legs, shoes = (out[p].box for p in PARTS4)
    assert head[0] < 64 < head[2] and head[1] < 18 < head[3] and head[3] < 50
    assert ub[0] <= 64 - 30 and ub[2] >= 64 + 30  # arms included
    assert ub[1] < 50 and 125 < ub[3] < 150
    assert legs[1] < 125 and legs[3] >= 235 and legs[0] <= 64 - 15
    assert shoes[1] < 235 and shoes[3] > 246
    centres = [(b[1] + b[3]) / 2 for b in (head, ub, legs, shoes)]
    assert centres == sorted(centres)


def test_hidden_keypoints_give_invisible_parts():
    k, v = skeleton()
    v[:11] = 0.1  # face hidden
    v[[L_KNEE, R_KNEE, L_ANKLE, R_ANKLE, L_HEEL, R_HEEL, L_TOE, R_TOE]] = 0.05
    out = keypoints_to_boxes(k, v, 128, 256, PARTS4)
    assert out["head"].box is None and out["head"].reason == "invisible"
    assert out["legs"].box is None and out["shoes"].box is None
    assert out["upper_body"].box is not None


def test_knees_only_extend_the_legs_and_points_above_hips_are_ignored():
    k, v = skeleton()
    v[[L_ANKLE, R_ANKLE]] = 0.0
    legs = keypoints_to_boxes(k, v, 128, 256, ("legs",))["legs"].box
    assert legs[3] > 185 + 40  # extended past the knees by a shin length
    k2, v2 = skeleton()
    k2[[L_KNEE, R_KNEE, L_ANKLE, R_ANKLE], 1] = 60  # "legs" above the hips: implausible
    assert keypoints_to_boxes(k2, v2, 128, 256, ("legs",))["legs"].box is None


def test_letterbox_roundtrip():
    img = person_image(64, 128)
    canvas, s, ox, oy = letterbox(img, 256, 1.25)
    assert canvas.shape == (256, 256, 3) and canvas.dtype == np.float32 and canvas.max() <= 1.0
    # The crop's bottom-right corner maps back to (64, 128).
    u, v = ox + 64 * s, oy + 128 * s
    assert ((u - ox) / s, (v - oy) / s) == pytest.approx((64, 128))
    assert canvas[0, 0].sum() == 0  # margin is black


def test_missing_pose_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(PoseModelError, match="does not exist"):
        find_pose_model(tmp_path / "nope.tflite")


@pytest.fixture(scope="module")
def pose_model():
    try:
        return find_pose_model()
    except PoseModelError as exc:
        pytest.skip(f"pose model not available: {exc}")


def test_pose_expert_on_a_drawn_person(pose_model):
    ex = build_expert("pose", parts=PARTS4, model_path=pose_model)
    out = ex.ground([person_image(128, 256, seed=1)])[0]
    assert set(out) == set(PARTS4)
    for b in out.values():
        assert 0 <= b.box[0] < b.box[2] <= 128 and 0 <= b.box[1] < b.box[3] <= 256
        assert b.source in ("pose", "prior") and (b.source == "prior") == (b.reason is not None)


def test_pose_expert_on_real_crops(pose_model, mini_mars):
    from muva.grounding.run import load_image

    files = sorted(mini_mars.glob("bbox_train/*/*.jpg"))[::200][:8]
    ex = build_expert("pose", model_path=pose_model)
    out = ex.ground([load_image(str(f))[0] for f in files])
    kept = sum(b.source == "pose" for o in out for b in o.values())
    assert kept >= 0.6 * 3 * len(files)  # most parts of real pedestrians are found
    for o in out:
        if o["head"].source == "pose" and o["legs"].source == "pose":
            assert o["head"].box[3] < o["legs"].box[3]


# ----------------------------------------------------------------------------- MLLM (tiny random Qwen2.5-VL)
@pytest.fixture(scope="module")
def tiny_mllm():
    pytest.importorskip("transformers")
    from muva.grounding.experts.mllm_tiny import build_tiny_qwen25vl

    model, processor = build_tiny_qwen25vl()
    return build_expert("mllm", model_obj=model, processor_obj=processor, device="cpu", max_new_tokens=24)


def test_mllm_garbage_answers_fall_back_to_the_prior(tiny_mllm):
    images = [person_image(64, 128, seed=i) for i in range(2)]
    out = tiny_mllm.ground(images)
    # One joint question per crop; garbage answers name no part, so every part is asked again alone.
    assert len(tiny_mllm.last_answers) == 2 + 2 * 3 and all(isinstance(a, str) for a in tiny_mllm.last_answers)
    for o in out:
        assert set(o) == {"head", "upper_body", "legs"}
        for part, b in o.items():
            assert b.via == "single"
            # A random model almost surely writes no parsable box; if it ever does, it must be valid.
            assert (b.source == "prior" and b.reason in ("unparsable", "tiny", "outside", "empty", "huge", "order")) or b.source == "mllm"
    assert tiny_mllm.answer_format == "qwen2.5"


def test_mllm_maps_json_answers_back_to_crop_pixels(tiny_mllm, monkeypatch):
    """With a scripted answer the whole propose path maps model-input pixels to the crop."""
    images = [person_image(64, 128)]
    seen = {}

    def scripted(imgs, texts, max_new_tokens=None):
        seen["sizes"] = [im.size for im in imgs]
        seen["texts"] = list(texts)
        # The model input is 224x448 (say); boxes in those pixels.
        answers = {
            "head": '```json\n[{"bbox_2d": [84, 9, 140, 72], "label": "head"}]\n```',
            "upper body": '[{"bbox_2d": [34, 72, 190, 246], "label": "upper body"}]',
            "legs": '[{"bbox_2d": [56, 246, 110, 416], "label": "left leg"}, {"bbox_2d": [112, 246, 168, 416], "label": "right leg"}]',
        }
        out = [next(a for k, a in answers.items() if f"the {k} of" in t) for t in texts]
        return out, [(224, 448)] * len(texts)

    monkeypatch.setattr(tiny_mllm, "generate", scripted)
    monkeypatch.setattr(tiny_mllm, "ask", "each")
    out = tiny_mllm.ground(images)[0]
    assert seen["sizes"] == [(224, 448)] * 3  # 64x128 crop upscaled to height 448
    assert "Locate the head of the person" in seen["texts"][0]
    f = 64 / 224
    assert out["head"].source == "mllm" and out["head"].box == pytest.approx((84 * f, 9 * f, 140 * f, 72 * f))
    assert out["legs"].box == pytest.approx((56 * f, 246 * f, 168 * f, 416 * f))  # union of both legs


def test_mllm_muva_prompt_uses_cogvlm_format():
    pytest.importorskip("transformers")
    from muva.grounding.experts.mllm import question

    assert question("upper_body", "muva") == "Guide me to the location of the upper body of the person within the image by providing its bounding boxes"
    with pytest.raises(ValueError):
        question("head", "chatty")


def test_mllm_tiny_end_to_end_through_the_cli(tmp_path):
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from muva.cli import app
    from test_grounding_common import make_market

    root = make_market(tmp_path / "mk", n_train=2, n_query=0, n_gallery=0)
    out = tmp_path / "mllm.sqlite"
    res = CliRunner().invoke(app, ["ground", "run", str(root), "--expert", "mllm", "-X", "model=tiny-random", "-X", "prompt=muva", "-X", "device=cpu", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    from muva.grounding.cache import GroundingCache

    with GroundingCache.open(out, readonly=True) as c:
        assert len(c) == 2 and c.meta["settings"]["answer_format"] == "cogvlm"
        assert sum(c.stats()["reasons"].get("head", {}).values()) + c.stats()["sources"]["head"].get("mllm", 0) == 2


# ----------------------------------------------------------------------------- import of the authors' pickles
def _authors_like_pickle(path, names, kind="additive", torch_values=False):
    rng = np.random.default_rng(0)
    data, truth = {}, {}
    for n in names:
        m = np.zeros((3, 128), dtype=bool)
        m[0, 2:6] = True  # head: row 0, cols 2..5
        m[1, 16:72] = True  # upper body: rows 2..8
        m[2, 72:128] = rng.random(56) > 0.3
        m[2, 72] = True
        truth[n] = m
        value = np.where(m, 0.0, -np.inf).astype(np.float32) if kind == "additive" else m.astype(np.float32)
        if torch_values:
            import torch

            value = torch.from_numpy(value)
        data[f"bounding_box_train/{n}"] = value
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return truth


@pytest.mark.parametrize("kind, torch_values", [("additive", False), ("binary", False), ("additive", True)])
def test_import_keeps_exact_masks(tmp_path, kind, torch_values):
    from muva.grounding.experts.importer import ImportExpert

    names = ["0001_c1s1_000001_00.jpg", "0002_c1s1_000002_00.jpg"]
    truth = _authors_like_pickle(tmp_path / "m.pkl", names, kind, torch_values)
    ex = ImportExpert(masks=tmp_path / "m.pkl")
    imgs = [person_image(64, 128, seed=i) for i in range(3)]
    entries = ex.entries([f"query/{names[0]}", f"bounding_box_train/{names[1]}", "query/9999_c1s1_1_00.jpg"], imgs)
    assert (entries[0].patch_masks(["head", "upper_body", "legs"], (16, 8)) == truth[names[0]]).all()
    assert entries[0].boxes["head"].box == pytest.approx((2 * 8, 0, 6 * 8, 8))  # 64x128 image: patches are 8x8
    assert entries[0].boxes["head"].source == "import"
    assert entries[2].masks is None and entries[2].boxes["legs"].reason == "missing"


def test_import_rejects_wrong_layouts(tmp_path):
    from muva.grounding.experts.importer import ImportExpert, MaskImportError

    with open(tmp_path / "bad.pkl", "wb") as fh:
        pickle.dump({"a.jpg": np.zeros((4, 128))}, fh)
    with pytest.raises(MaskImportError, match="4"):
        ImportExpert(masks=tmp_path / "bad.pkl")
    with open(tmp_path / "grid.pkl", "wb") as fh:
        pickle.dump({"a.jpg": np.zeros((3, 129))}, fh)
    with pytest.raises(MaskImportError, match="--grid"):
        ImportExpert(masks=tmp_path / "grid.pkl")
    with pytest.raises(MaskImportError, match="does not exist"):
        ImportExpert(masks=tmp_path / "none.pkl")
    with open(tmp_path / "list.pkl", "wb") as fh:
        pickle.dump([1, 2], fh)
    with pytest.raises(MaskImportError, match="expected a non-empty dict"):
        ImportExpert(masks=tmp_path / "list.pkl")


def test_import_round_trip_keeps_empty_and_full_masks_exactly(tmp_path):
    """Authors' pickle → cache → training masks: every mask unchanged, an empty part stays empty."""
    from _helpers import make_market

    from muva.data.datasets import open_dataset
    from muva.grounding.experts.importer import ImportExpert
    from muva.grounding.masks import load_pseudo_masks
    from muva.grounding.run import ground_images, resolve_images

    market = make_market(tmp_path / "market", ids=2, cams=2)
    train = open_dataset(str(market)).train
    rng = np.random.default_rng(0)
    truth = {}
    for i, rec in enumerate(train):
        m = rng.random((3, 128)) > 0.5
        if i == 0:
            m[0] = False  # head not found: empty
        if i == 1:
            m[:] = True  # every patch in every part
        if i == 2:
            m[1:] = False  # two empty parts
        truth[Path(rec.path).name] = m
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump({k: np.where(v, 0.0, -np.inf).astype(np.float32) for k, v in truth.items()}, fh)
    expert = ImportExpert(masks=tmp_path / "m.pkl")
    ground_images(resolve_images(str(market), splits=("train",)), expert, tmp_path / "c.sqlite", progress=False)
    assert expert.empty_parts == {"head": 1, "upper_body": 1, "legs": 1}
    assert expert.notes()[0].startswith("3 empty part mask(s) kept empty (head 1, upper_body 1, legs 1)")
    got = load_pseudo_masks(train, tmp_path / "c.sqlite")
    for rec in train:
        assert (got[rec.path] == truth[Path(rec.path).name]).all(), rec.path
    assert not got[train[0].path][0].any() and got[train[1].path].all()


