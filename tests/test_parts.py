"""The part table: every registered part has every fact and every per-part rule.

Each test is parametrised over :data:`muva.data.parts.PARTS`, so a part added to the table
without its prior box, colour, order, phrase, pose rule or synthetic rule fails here (and
the pose / synthetic modules refuse to import).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muva.data.parts import DEFAULT_PARTS, PART_NAMES, PART_PHRASES, PARTS, Part, PartTableError, _check_table, check_parts, get_part, require_rules
from muva.grounding.boxes import PRIOR_SCORE, ValidationRules, check_box, order_violations, prior_boxes, validate_parts

ALL = list(PARTS)
ROOT = Path(__file__).resolve().parents[1]


def test_table_is_ordered_and_complete():
    known = ("head", "upper_body", "legs", "shoes")
    assert [p for p in PART_NAMES if p in known] == list(known)  # top to bottom
    assert DEFAULT_PARTS == ("head", "upper_body", "legs")  # MUVA's R = 3
    assert [p.order for p in PARTS.values()] == sorted(p.order for p in PARTS.values())
    assert {p: PART_PHRASES[p] for p in known} == {"head": "head", "upper_body": "upper body", "legs": "legs", "shoes": "shoes"}
    assert {p for p in known if PARTS[p].union} == {"legs", "shoes"}
    assert {p: PARTS[p].max_area for p in known if PARTS[p].max_area} == {"head": 0.35, "shoes": 0.35}
    with pytest.raises(FrozenInstanceError):
        PARTS["head"].phrase = "skull"  # type: ignore[misc]
    with pytest.raises(TypeError):
        PARTS["tail"] = PARTS["head"]  # type: ignore[index]


@pytest.mark.parametrize("name", ALL)
def test_record_is_consistent(name):
    rec = PARTS[name]
    assert isinstance(rec, Part) and rec.name == name and get_part(name) is rec
    assert check_parts([name]) == (name,)
    assert rec.phrase and rec.phrase == PART_PHRASES[name]
    assert rec.max_area is None or 0 < rec.max_area <= 1


@pytest.mark.parametrize("name", ALL)
def test_prior_box_is_valid_and_passes_validation(name):
    x0, y0, x1, y1 = PARTS[name].prior
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    box = prior_boxes(128, 256, (name,))[name]
    assert box.box == pytest.approx((x0 * 128, y0 * 256, x1 * 128, y1 * 256))
    assert (box.score, box.source, box.reason) == (PRIOR_SCORE, "prior", None)
    # The prior is the fallback: it must itself survive the checks (not tiny, not huge).
    assert check_box(name, box.box, 128, 256, ValidationRules()) == (pytest.approx(box.box), None)


@pytest.mark.parametrize("name", ALL)
def test_vertical_order_and_max_area_drive_validation(name):
    rec = PARTS[name]
    priors = prior_boxes(128, 256, ALL)
    assert order_violations({p: b.box for p, b in priors.items()}) == set()
    # Every other part's prior centre lies on the side the order says.
    cy = 0.5 * (rec.prior[1] + rec.prior[3])
    for other in PARTS.values():
        ocy = 0.5 * (other.prior[1] + other.prior[3])
        if other.order < rec.order:
            assert ocy < cy
        elif other.order > rec.order:
            assert ocy > cy
    assert ValidationRules().max_area.get(name) == rec.max_area
    if rec.max_area is not None:  # the whole image is too big for a small part
        assert check_box(name, (0, 0, 128, 256), 128, 256, ValidationRules()) == (None, "huge")


@pytest.mark.parametrize("name", ALL)
def test_colour_is_distinct_and_used_in_pictures(name):
    from muva.viz.masks import PART_COLOURS, UNKNOWN_COLOUR, overlay, part_colour

    colour = PARTS[name].colour
    assert len(colour) == 3 and all(0 <= c <= 255 for c in colour)
    assert colour != UNKNOWN_COLOUR
    assert [p for p in PARTS.values() if p.colour == colour] == [PARTS[name]]
    assert part_colour(name) == colour == PART_COLOURS[name]
    img = overlay(Image.new("RGB", (8, 8), (0, 0, 0)), np.ones((1, 1)), (1, 1), [name], alpha=1.0)
    assert img.getpixel((0, 0)) == colour and img.getpixel((4, 4)) == colour


@pytest.mark.parametrize("name", ALL)
def test_pose_rule_exists_and_boxes_the_part(name):
    from test_grounding_experts import skeleton  # imports the pose module, which checks its rules

    from muva.grounding.experts.pose import PART_RULES, keypoints_to_boxes

    assert callable(PART_RULES[name])
    k, v = skeleton()
    props = keypoints_to_boxes(k, v, 128, 256, ALL)
    assert props[name].box is not None and props[name].score > 0
    kept = validate_parts(props, ALL, 128, 256, source="pose", fallback=prior_boxes(128, 256, ALL))
    assert kept[name].source == "pose" and kept[name].reason is None


@pytest.mark.parametrize("name", ALL)
def test_synthetic_rule_exists_and_boxes_the_part(name):
    from muva.data.synth.appearance import random_identity
    from muva.data.synth.figure import PART_PIECES, PIECES, sample_pose
    from muva.data.synth.render import draw_person

    assert PART_PIECES[name] and set(PART_PIECES[name]) <= set(PIECES)
    rng = np.random.default_rng(3)
    ident = random_identity(rng, 3, 3, "mild")
    pose = sample_pose(rng, ident, [1, 0, 0, 0], 1.0, (256, 512), 0.0)
    boxes = draw_person(Image.new("RGB", (256, 512), (90, 90, 90)), ident, pose)
    assert list(boxes) == ALL
    x0, y0, x1, y1 = boxes[name]
    assert all(np.isfinite([x0, y0, x1, y1])) and 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 512


@pytest.mark.parametrize("name", ALL)
def test_mllm_phrase_and_union(name):
    from muva.grounding.experts.mllm import PROMPTS, MLLMExpert, question

    rec = PARTS[name]
    for style in PROMPTS:
        assert question(name, style) == PROMPTS[style].format(phrase=rec.phrase)
    # Two boxes in one answer: joined for union parts, the first one otherwise.
    expert = MLLMExpert.__new__(MLLMExpert)
    expert.answer_format, expert._fallback_formats = "qwen2.5", []
    answer = f'[{{"bbox_2d": [10, 10, 20, 20], "label": "{rec.phrase}"}}, {{"bbox_2d": [40, 40, 60, 60], "label": "{rec.phrase}"}}]'
    box = expert.parse(answer, name, (100, 100), (100, 100)).box
    assert box == pytest.approx((10, 10, 60, 60) if rec.union else (10, 10, 20, 20))


# ----------------------------------------------------------------------------- the guards
def test_rule_table_without_a_part_fails_naming_it():
    rules = {p: object() for p in PARTS if p != "legs"}
    with pytest.raises(PartTableError, match=r"part\(s\) legs of muva.data.parts have no pose rule: add them in here.RULES"):
        require_rules("pose", rules, "here.RULES")
    with pytest.raises(PartTableError, match=r"pose rule\(s\) for tail name no part"):
        require_rules("pose", {**{p: 1 for p in PARTS}, "tail": 1}, "here.RULES")
    require_rules("pose", {p: 1 for p in PARTS}, "here.RULES")  # complete: no error


def test_bad_records_are_rejected():
    head, legs = PARTS["head"], PARTS["legs"]
    with pytest.raises(PartTableError, match="distinct colours"):
        _check_table([head, replace(legs, colour=head.colour)])
    with pytest.raises(PartTableError, match="distinct orders"):
        _check_table([head, replace(legs, order=head.order)])
    with pytest.raises(PartTableError, match="prior box"):
        _check_table([replace(head, prior=(0.5, 0.1, 0.4, 0.2))])
    with pytest.raises(PartTableError, match="listed twice"):
        _check_table([head, head])
    with pytest.raises(ValueError, match="unknown part 'tail'; valid parts: head, upper_body, legs"):
        get_part("tail")


def test_base_expert_does_not_import_the_prior():
    code = ("import sys; import muva.grounding.experts.base; "
            "print('muva.grounding.experts.prior' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_fallback_is_a_constructor_argument():
    from muva.grounding.boxes import PartBox, Proposal
    from muva.grounding.experts.base import GroundingExpert

    class Silent(GroundingExpert):
        name = "silent"

        def propose(self, images):
            return [{p: Proposal(None) for p in self.parts} for _ in images]

    img = Image.new("RGB", (64, 128))
    default = Silent(parts=("head", "legs")).ground([img])[0]
    assert default == {p: PartBox(b.box, b.score, "prior", "missing") for p, b in prior_boxes(64, 128, ("head", "legs")).items()}
    mine = Silent(parts=("head",), fallback=lambda w, h, parts: {p: PartBox((0, 0, w, h), 0.1, "whole") for p in parts}).ground([img])[0]
    assert mine == {"head": PartBox((0, 0, 64, 128), 0.1, "whole", "missing")}


def test_ground_run_default_parts_come_from_the_table():
    import inspect

    from muva.grounding.commands import run

    option = inspect.signature(run).parameters["parts"].default
    assert option.default is None  # every part the expert can ground (GroundingExpert.default_parts)
    assert all(p in option.help for p in PART_NAMES)
    assert DEFAULT_PARTS == ("head", "upper_body", "legs")
