"""One generation per crop: answers naming several parts (parse_parts), the MLLM expert's joint
question with per-part fallback, the way each box was asked (via), and Qwen3-VL."""

from __future__ import annotations

import pytest
from test_grounding_common import person_image

from muva.data.parts import PARTS
from muva.grounding.experts import build_expert
from muva.grounding.experts.mllm_prompts import joint_question, question
from muva.grounding.parsers import FORMATS, match_part, parse_parts

P3 = ("head", "upper_body", "legs")
TERMS = {p: r.terms for p, r in PARTS.items()}


# ----------------------------------------------------------------------------- parse_parts
def test_well_formed_qwen_answer_gives_every_part_in_crop_pixels():
    ans = ('```json\n[{"bbox_2d": [84, 9, 140, 72], "label": "head"},\n {"bbox_2d": [34, 72, 190, 246], "label": "upper body"},\n'
           ' {"bbox_2d": [56, 246, 110, 416], "label": "left leg"}, {"bbox_2d": [112, 246, 168, 416], "label": "right leg"}]\n```')
    out = parse_parts(ans, "qwen2.5", (64, 128), P3, input_size=(224, 448))
    f = 64 / 224
    assert out["head"].box == pytest.approx((84 * f, 9 * f, 140 * f, 72 * f))
    assert out["upper_body"].box == pytest.approx((34 * f, 72 * f, 190 * f, 246 * f))
    assert out["legs"].box == pytest.approx((56 * f, 246 * f, 168 * f, 416 * f))  # union of the two legs (Part.union)


def test_partial_answer_leaves_the_missing_parts_failed_with_a_reason():
    ans = '[{"bbox_2d": [100, 10, 400, 160], "label": "Head"}, {"bbox_2d": [1, 2, 3, 4], "label": "person"}]'
    out = parse_parts(ans, "rel1000", (100, 200), P3)
    assert out["head"].box == pytest.approx((10, 2, 40, 32))
    for part in ("upper_body", "legs"):
        assert not out[part].ok and "no box labelled" in out[part].reason


@pytest.mark.parametrize("ans", ["", "I cannot see a person.", "[[", '{"bbox_2d": "here"}', None, 17])
def test_malformed_answers_fail_every_part_and_never_raise(ans):
    out = parse_parts(ans, "qwen2.5", (64, 128), P3)
    assert set(out) == set(P3) and not any(b.ok for b in out.values())


def test_unlabelled_and_ambiguous_boxes_are_not_guessed():
    ans = '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [0, 0, 20, 20], "label": "body"}, {"bbox_2d": [0, 0, 5, 5], "label": "head and torso"}]'
    assert not any(b.ok for b in parse_parts(ans, "qwen2.5", (64, 128), P3).values())


def test_best_score_wins_for_a_single_box_part_and_synonyms_name_parts():
    ans = {"boxes": [[0.5, 0.1, 0.2, 0.1], [0.5, 0.12, 0.3, 0.1], [0.5, 0.8, 0.6, 0.3]], "scores": [0.4, 0.9, 0.7],
           "labels": ["head", "face", "pants"]}
    out = parse_parts(ans, "gdino", (100, 200), P3)
    assert out["head"].box == pytest.approx((35, 14, 65, 34)) and out["head"].score == pytest.approx(0.9)
    assert out["legs"].box == pytest.approx((20, 130, 80, 190))


def test_cogvlm_answer_labels_come_from_the_text_before_each_box():
    ans = "The head [[300,10,700,170]], the upper body [[100,150,900,550]] and the legs [[150,520,480,950;500,520,850,950]]."
    out = parse_parts(ans, "cogvlm", (128, 256), P3)
    assert out["head"].box == pytest.approx((38.4, 2.56, 89.6, 43.52))
    assert out["legs"].box == pytest.approx((19.2, 133.12, 108.8, 243.2))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_a_multi_part_answer_without_raising(fmt):
    out = parse_parts("head: nothing here", fmt, (64, 128), P3)
    assert set(out) == set(P3)


@pytest.mark.parametrize("part", list(PARTS))
def test_every_part_is_named_by_its_phrase_and_each_synonym(part):
    for term in PARTS[part].terms:
        assert match_part(f"the {term}", TERMS) == part, term
        assert match_part(term.upper() + "s", TERMS) in (part, None)  # plural / case never names another part


def test_joint_question_names_every_part_with_its_phrase():
    q = joint_question(("head", "upper_body", "legs", "shoes"))
    assert "the head, the upper body, the legs and the shoes of the person" in q and "labelled head, upper body, legs and shoes" in q
    assert question("legs", "muva").startswith("Guide me to the location of the legs")


# ----------------------------------------------------------------------------- the MLLM expert asking jointly
@pytest.fixture(scope="module")
def joint_expert():
    pytest.importorskip("transformers")
    return build_expert("mllm", model="tiny-random", device="cpu", max_new_tokens=8)


def _scripted(expert, monkeypatch, answer_for):
    calls = []

    def generate(imgs, texts, max_new_tokens=None):
        calls.append(list(texts))
        return [answer_for(t) for t in texts], [(224, 448)] * len(texts)

    monkeypatch.setattr(expert, "generate", generate)
    monkeypatch.setattr(expert, "calls", 0)
    monkeypatch.setattr(expert, "crops", 0)
    return calls


def test_one_generation_per_crop_when_the_joint_answer_names_every_part(joint_expert, monkeypatch):
    full = ('[{"bbox_2d": [84, 9, 140, 72], "label": "head"}, {"bbox_2d": [34, 72, 190, 246], "label": "upper body"},'
            ' {"bbox_2d": [56, 246, 168, 416], "label": "legs"}]')
    calls = _scripted(joint_expert, monkeypatch, lambda t: full)
    out = joint_expert.ground([person_image(64, 128, seed=i) for i in range(3)])
    assert len(calls) == 1 and len(calls[0]) == 3 and "the head, the upper body and the legs" in calls[0][0]
    assert all(b.via == "joint" and b.source == "mllm" for o in out for b in o.values())


def test_parts_missing_from_the_joint_answer_are_asked_again_alone(joint_expert, monkeypatch):
    partial = '[{"bbox_2d": [84, 9, 140, 72], "label": "head"}, {"bbox_2d": [34, 72, 190, 246], "label": "upper body"}]'
    legs = '[{"bbox_2d": [56, 246, 168, 416], "label": "legs"}]'
    calls = _scripted(joint_expert, monkeypatch, lambda t: partial if "labelled" in t else legs if "legs" in t else "no idea")
    before = joint_expert.paths["joint+single"]
    out = joint_expert.ground([person_image(64, 128, seed=i) for i in range(2)])
    assert [len(c) for c in calls] == [2, 2] and all("Locate the legs of the person" in t for t in calls[1])
    for o in out:
        assert (o["head"].via, o["upper_body"].via, o["legs"].via) == ("joint", "joint", "single")
        assert o["legs"].source == "mllm"
    assert joint_expert.paths["joint+single"] - before == 2


def test_a_malformed_joint_answer_falls_back_to_one_question_per_part(joint_expert, monkeypatch):
    calls = _scripted(joint_expert, monkeypatch, lambda t: "```json\n[{\"bbox_2d\": [84, 9," if "labelled" in t else "nothing")
    out = joint_expert.ground([person_image(64, 128)])
    assert [len(c) for c in calls] == [1, 3]
    assert all(b.source == "prior" and b.reason == "unparsable" and b.via == "single" for b in out[0].values())


def test_ask_each_asks_one_question_per_part_and_notes_count_generations(monkeypatch):
    pytest.importorskip("transformers")
    expert = build_expert("mllm", model="tiny-random", device="cpu", ask="each", max_new_tokens=4)
    calls = _scripted(expert, monkeypatch, lambda t: "[]")
    real_generations = expert.generations
    expert.ground([person_image(64, 128) for _ in range(2)])
    assert [len(c) for c in calls] == [6] and expert.paths["single"] == 2 and real_generations == 0
    # the real generate counts: one joint question per crop on the tiny model
    joint = build_expert("mllm", model="tiny-random", device="cpu", max_new_tokens=4)
    joint.ground([person_image(64, 128) for _ in range(2)])
    assert joint.calls >= 1 and joint.generations >= 2 and "generations per crop" in joint.notes()[0]


def test_min_new_tokens_pins_the_answer_length(monkeypatch):
    pytest.importorskip("transformers")
    expert = build_expert("mllm", model="tiny-random", device="cpu", max_new_tokens=6, min_new_tokens=6, ask="each")
    seen = {}
    real = expert.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(expert.model, "generate", spy)
    answers, _ = expert.generate([person_image(64, 128)], [question("head")])
    assert seen["min_new_tokens"] == seen["max_new_tokens"] == 6 and len(answers) == 1


# ----------------------------------------------------------------------------- Qwen3-VL
def test_qwen3vl_tiny_model_end_to_end_reads_0_1000_boxes(monkeypatch):
    pytest.importorskip("transformers")
    expert = build_expert("mllm", model="tiny-random-qwen3", device="cpu", max_new_tokens=6)
    assert expert.model.config.model_type == "qwen3_vl" and expert.answer_format == "rel1000"
    out = expert.ground([person_image(64, 128, seed=1), person_image(48, 160, seed=2)])
    assert all(set(o) == set(P3) for o in out) and expert.generations >= 2
    # A Qwen3-VL answer: JSON bbox_2d on the 0-1000 grid of the image, whatever its input size.
    answer = '[{"bbox_2d": [300, 10, 700, 170], "label": "head"}, {"bbox_2d": [100, 150, 900, 550], "label": "upper body"}, ' \
             '{"bbox_2d": [150, 520, 850, 950], "label": "legs"}]'
    found = expert.parse_joint(answer, (64, 128), (256, 512))
    assert found["head"].box == pytest.approx((19.2, 1.28, 44.8, 21.76))


def test_model_ids_of_each_family_and_bad_sizes():
    pytest.importorskip("transformers")
    from muva.grounding.experts.mllm import model_id_for

    assert model_id_for("qwen3", "auto") == "Qwen/Qwen3-VL-8B-Instruct"
    assert model_id_for("qwen2.5", "3b") == "Qwen/Qwen2.5-VL-3B-Instruct"
    with pytest.raises(ValueError, match="choose from 2b, 4b, 8b, 32b"):
        model_id_for("qwen3", "7b")


def test_via_is_stored_and_counted_by_the_cache(tmp_path):
    from muva.grounding.boxes import PartBox
    from muva.grounding.cache import CacheEntry, GroundingCache

    entry = CacheEntry("a.jpg", "ok", 64, 128, {"head": PartBox((1, 2, 30, 40), 0.9, "mllm", None, "joint"),
                                                "legs": PartBox((1, 60, 60, 120), 0.25, "prior", "unparsable", "single")})
    with GroundingCache.open(tmp_path / "c.sqlite", meta={"root": str(tmp_path), "parts": ["head", "legs"], "expert": "mllm"}) as c:
        c.add(entry)
        assert c.get("a.jpg").boxes["head"].via == "joint"
        assert c.stats()["via"] == {"head": {"joint": 1}, "legs": {"single": 1}}


def test_default_batch_keeps_the_sequences_per_call_and_re_asks_are_chunked(monkeypatch):
    pytest.importorskip("transformers")
    joint = build_expert("mllm", model="tiny-random", device="cpu")
    each = build_expert("mllm", model="tiny-random", device="cpu", ask="each")
    assert (joint.batch_size, each.batch_size) == (24, 8)  # 24 joint questions = 8 crops x 3 part questions
    small = build_expert("mllm", model="tiny-random", device="cpu", batch_size=2)
    calls = _scripted(small, monkeypatch, lambda t: "nothing")
    small.ground([person_image(64, 128, seed=i) for i in range(2)])
    assert [len(c) for c in calls] == [2, 2, 2, 2]  # the joint call, then 6 re-asks at most 2 per call
