"""Answer parsers: recorded answers of every supported format, malformed ones, properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muva.grounding.parsers import FORMATS, parse_answer

CROP = (128, 256)  # (W, H)


def approx_box(got, want, tol=0.02):
    assert got is not None
    assert got == pytest.approx(want, abs=tol)


# ----------------------------------------------------------------------------- qwen2.5
def test_qwen25_fenced_json_in_resized_pixels():
    # The processor resized the 128x256 crop (upscaled to 224x448) to 224x448: factor 128/224.
    ans = '```json\n[\n\t{"bbox_2d": [70, 5, 126, 77], "label": "head"}\n]\n```'
    r = parse_answer(ans, "qwen2.5", CROP, input_size=(224, 448))
    approx_box(r.box, (70 * 128 / 224, 5 * 256 / 448, 126 * 128 / 224, 77 * 256 / 448))


def test_qwen25_bare_dict_prose_and_label_choice():
    ans = 'Sure! {"bbox_2d": [10, 20, 30, 40], "label": "head"} is where it is.'
    approx_box(parse_answer(ans, "qwen2.5", CROP).box, (10, 20, 30, 40))
    ans = json.dumps([{"bbox_2d": [0, 0, 5, 5], "label": "bag"}, {"bbox_2d": [10, 150, 60, 250], "label": "legs"}])
    approx_box(parse_answer(ans, "qwen2.5", CROP, label="legs").box, (10, 150, 60, 250))


def test_qwen25_union_of_two_legs():
    ans = '[{"bbox_2d": [10, 150, 50, 250], "label": "left leg"}, {"bbox_2d": [60, 140, 100, 252], "label": "right leg"}]'
    approx_box(parse_answer(ans, "qwen2.5", CROP, label="legs", combine="union").box, (10, 140, 100, 252))
    approx_box(parse_answer(ans, "qwen2.5", CROP, label="legs", combine="first").box, (10, 150, 50, 250))


def test_qwen25_swapped_corners_are_ordered():
    approx_box(parse_answer('[{"bbox_2d": [30, 40, 10, 20]}]', "qwen2.5", CROP).box, (10, 20, 30, 40))


@pytest.mark.parametrize(
    "ans",
    [
        "",
        "I cannot see a person in this image.",
        '```json\n[{"bbox_2d": [1, 2, 3]}]\n```',
        '[{"bbox_2d": ["a", "b", "c", "d"]}]',
        '[{"bbox_2d": [1, 2, 3, NaN]}]',
        '{"label": "head"}',
        "[[[[[[[",
        '```json\n[{"bbox_2d": [12, 5, 4',
    ],
)
def test_qwen25_malformed_answers_give_none_with_reason(ans):
    r = parse_answer(ans, "qwen2.5", CROP)
    assert r.box is None and r.reason.startswith("unparsable")


# ----------------------------------------------------------------------------- rel1000
def test_qwen2vl_box_tokens():
    ans = "<|object_ref_start|>the head<|object_ref_end|><|box_start|>(300,10),(700,170)<|box_end|>"
    approx_box(parse_answer(ans, "rel1000", CROP).box, (0.3 * 128, 0.01 * 256, 0.7 * 128, 0.17 * 256))


def test_internvl_box_tags_several_boxes():
    ans = "<ref>legs</ref><box>[[100, 550, 450, 990], [500, 560, 900, 995]]</box>"
    approx_box(parse_answer(ans, "rel1000", CROP, combine="union").box, (12.8, 0.55 * 256, 0.9 * 128, 0.995 * 256))


def test_qwen3vl_json_relative():
    ans = '[{"bbox_2d": [250, 0, 750, 180], "label": "head"}]'
    approx_box(parse_answer(ans, "qwen3", CROP).box, (32, 0, 96, 0.18 * 256))


def test_rel1000_malformed():
    assert parse_answer("<|box_start|>(1,2),(3)<|box_end|>", "rel1000", CROP).box is None
    assert parse_answer("<box>[[a,b,c,d]]</box>", "internvl", CROP).box is None


# ----------------------------------------------------------------------------- cogvlm
def test_cogvlm_thousandths_matches_paper_example():
    # The paper's example head [38,3,73,44] on a 128x256 crop in CogVLM's format.
    ans = "The head of the person is at [[297,012,570,172]]."
    approx_box(parse_answer(ans, "cogvlm", CROP).box, (38.0, 3.07, 72.96, 44.03), tol=0.05)


def test_cogvlm_several_boxes_union():
    ans = "legs [[100,550,450,990;500,560,900,995]]"
    approx_box(parse_answer(ans, "cogvlm", CROP, combine="union").box, (12.8, 140.8, 115.2, 254.72))
    approx_box(parse_answer(ans, "cogvlm", CROP).box, (12.8, 140.8, 57.6, 253.44))


@pytest.mark.parametrize("ans", ["[[1,2,3]]", "no boxes here", "[[]]", "[1,2,3,4]"])
def test_cogvlm_malformed(ans):
    assert parse_answer(ans, "cogvlm", CROP).box is None


# ----------------------------------------------------------------------------- florence-2
def test_florence2_postprocessed_dict():
    ans = {"<CAPTION_TO_PHRASE_GROUNDING>": {"bboxes": [[40.5, 3.2, 80.1, 45.0], [0, 0, 2, 2]], "labels": ["head", "hat"]}}
    approx_box(parse_answer(ans, "florence2", CROP, label="head").box, (40.5, 3.2, 80.1, 45.0))


def test_florence2_raw_loc_tokens():
    ans = "head<loc_300><loc_10><loc_700><loc_170>"
    approx_box(parse_answer(ans, "florence2", CROP).box, (300.5 * 0.128, 10.5 * 0.256, 700.5 * 0.128, 170.5 * 0.256))


def test_florence2_malformed():
    assert parse_answer({"<CAPTION_TO_PHRASE_GROUNDING>": {"bboxes": [], "labels": []}}, "florence2", CROP).box is None
    assert parse_answer("head<loc_1><loc_2>", "florence2", CROP).box is None
    assert parse_answer(42, "florence2", CROP).box is None


# ----------------------------------------------------------------------------- grounding dino
def test_gdino_normalised_cxcywh_best_score():
    ans = {"boxes": [[0.5, 0.1, 0.3, 0.15], [0.5, 0.7, 0.6, 0.5]], "scores": [0.4, 0.9]}
    r = parse_answer(ans, "gdino", CROP)
    approx_box(r.box, ((0.5 - 0.3) * 128, (0.7 - 0.25) * 256, (0.5 + 0.3) * 128, (0.7 + 0.25) * 256))
    assert r.score == pytest.approx(0.9)


def test_gdino_single_box_and_malformed():
    approx_box(parse_answer([0.5, 0.5, 1.0, 1.0], "gdino", CROP).box, (0, 0, 128, 256))
    assert parse_answer({"boxes": [[0.5, 0.5, -1, 0.2]]}, "gdino", CROP).box is None
    assert parse_answer("garbage", "gdino", CROP).box is None


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="unknown answer format"):
        parse_answer("x", "yolo", CROP)


# ----------------------------------------------------------------------------- properties
box_st = st.tuples(st.integers(0, 127), st.integers(0, 255), st.integers(1, 128), st.integers(1, 256)).map(
    lambda t: (t[0], t[1], min(128, t[0] + t[2]), min(256, t[1] + t[3]))
)


def render(box, fmt):
    """Write a pixel box of the 128x256 crop as a model of format ``fmt`` would answer."""
    x0, y0, x1, y1 = box
    if fmt == "qwen2.5":
        return f'```json\n[{{"bbox_2d": [{x0}, {y0}, {x1}, {y1}], "label": "head"}}]\n```'
    rel = [round(x0 / 128 * 1000), round(y0 / 256 * 1000), round(x1 / 128 * 1000), round(y1 / 256 * 1000)]
    if fmt == "rel1000":
        return f"<|object_ref_start|>head<|object_ref_end|><|box_start|>({rel[0]},{rel[1]}),({rel[2]},{rel[3]})<|box_end|>"
    if fmt == "cogvlm":
        return "head [[" + ",".join(f"{v:03d}" for v in rel) + "]]"
    if fmt == "florence2":
        return {"<CAPTION_TO_PHRASE_GROUNDING>": {"bboxes": [list(box)], "labels": ["head"]}}
    return {"boxes": [[(x0 + x1) / 256, (y0 + y1) / 512, (x1 - x0) / 128, (y1 - y0) / 256]], "scores": [0.8]}


@settings(max_examples=60, deadline=None)
@given(box=box_st, fmt=st.sampled_from(FORMATS))
def test_every_format_roundtrips_a_box(box, fmt):
    r = parse_answer(render(box, fmt), fmt, CROP)
    tol = 0.2 if fmt in ("rel1000", "cogvlm") else 1e-6  # rounding to thousandths
    approx_box(r.box, box, tol=tol)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200), fmt=st.sampled_from(FORMATS))
def test_arbitrary_text_never_raises(text, fmt):
    r = parse_answer(text, fmt, CROP)
    assert (r.box is None) == (r.reason is not None)
    if r.box is not None:
        assert len(r.box) == 4 and r.box[0] <= r.box[2] and r.box[1] <= r.box[3]
