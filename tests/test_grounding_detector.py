"""The open-vocabulary detector expert (gdino): label → part assignment on scripted detections,
tiny random Grounding DINO / MM-Grounding-DINO / OWLv2 end to end (one forward pass per batch),
the CLI, the registry listing and the offline errors."""

from __future__ import annotations

import time

import pytest
from test_grounding_common import make_market, person_image
from typer.testing import CliRunner

from muva.data.parts import PART_NAMES, Part, get_part
from muva.grounding.boxes import REASONS, prior_boxes, validate_parts
from muva.grounding.experts import EXPERTS, build_expert, option_infos
from muva.grounding.experts import detector
from muva.grounding.experts.detector import Detection, assign_parts, detections_of, label_parts, label_words, prompt_text

ALL = PART_NAMES  # head, upper_body, legs, shoes
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: fastest single-threaded on shared cores


def det(box, score, label):
    return Detection(tuple(float(v) for v in box), score, label)


# ----------------------------------------------------------------------------- prompt and label matching (pure)
def test_prompt_names_every_phrase_lowercase_each_ending_with_a_dot():
    assert prompt_text(ALL) == "head. upper body. legs. shoes."
    assert prompt_text(ALL) == " ".join(f"{get_part(p).phrase}." for p in ALL)  # read from the part records
    assert prompt_text(("legs", "head")) == "legs. head."


def test_label_words_drop_special_tokens_word_pieces_and_plurals():
    assert label_words("[CLS] Head. upper body. [SEP]") == ["head", "upper", "body"]
    assert label_words("shoe ##s") == ["shoe", "s"] and label_words("legs") == ["leg"] and label_words("") == []


def test_labels_name_the_right_parts():
    assert label_parts("upper body", ALL) == ("upper_body",)  # never the head
    assert label_parts("head", ALL) == ("head",)
    assert label_parts("body", ALL) == ("upper_body",) and label_parts("upper", ALL) == ("upper_body",)  # partial spans
    assert label_parts("leg", ALL) == ("legs",) and label_parts("shoe", ALL) == ("shoes",)  # singular of the phrase
    assert label_parts("head. upper body. legs. [SEP]", ALL) == ("head", "upper_body", "legs")  # a merged span
    assert label_parts("", ALL) == () and label_parts("person", ALL) == () and label_parts("##s", ALL) == ()
    assert label_parts("shoes", ("head", "legs")) == ()  # a part not asked for names nothing


def test_a_word_of_several_phrases_names_no_part(monkeypatch):
    table = {"upper_body": Part("upper_body", "upper body", (0, 0, 1, 0.5), 1, (1, 1, 1)),
             "lower_body": Part("lower_body", "lower body", (0, 0.5, 1, 1), 2, (2, 2, 2))}
    monkeypatch.setattr(detector, "get_part", table.__getitem__)
    assert label_parts("body", tuple(table)) == ()
    assert label_parts("lower body", tuple(table)) == ("lower_body",)


def test_each_part_takes_its_best_scoring_box():
    dets = [det((10, 2, 50, 30), 0.40, "head"), det((12, 4, 48, 28), 0.70, "head"), det((5, 30, 60, 120), 0.55, "upper body"),
            det((0, 0, 64, 128), 0.90, "person")]  # no part's word: ignored however well it scores
    out = assign_parts(dets, ALL, threshold=0.25)
    assert out["head"].box == (12, 4, 48, 28) and out["head"].score == pytest.approx(0.70)
    assert out["upper_body"].box == (5, 30, 60, 120) and out["upper_body"].score == pytest.approx(0.55)
    assert out["legs"].box is None and out["legs"].reason == "missing" and out["shoes"].score == 0.0


def test_union_parts_join_their_boxes_and_others_do_not():
    assert get_part("legs").union and get_part("shoes").union and not get_part("head").union
    dets = [det((10, 60, 30, 120), 0.5, "legs"), det((34, 62, 54, 118), 0.8, "leg"), det((12, 118, 30, 128), 0.3, "shoes"),
            det((36, 119, 56, 128), 0.6, "shoe ##s"), det((20, 2, 40, 20), 0.9, "head"), det((22, 3, 42, 21), 0.4, "head")]
    out = assign_parts(dets, ALL, threshold=0.25)
    assert out["legs"].box == (10, 60, 54, 120) and out["legs"].score == pytest.approx(0.8)
    assert out["shoes"].box == (12, 118, 56, 128) and out["shoes"].score == pytest.approx(0.6)
    assert out["head"].box == (20, 2, 40, 20)  # the best box, not the union of both


def test_boxes_at_or_below_the_threshold_are_ignored():
    dets = [det((10, 2, 50, 30), 0.25, "head"), det((0, 40, 64, 128), 0.2, "legs"), det((0, 40, 60, 127), 0.3, "legs"),
            det((1, 41, 63, 126), 0.1, "legs")]
    out = assign_parts(dets, ALL, threshold=0.25)
    assert out["head"].box is None and out["legs"].box == (0, 40, 60, 127)
    assert all(p.box is None for p in assign_parts(dets, ALL, threshold=0.5).values())


def test_a_label_naming_one_part_outranks_merged_labels():
    dets = [det((0, 0, 64, 80), 0.9, "head upper body"), det((15, 2, 45, 25), 0.4, "head"), det((0, 70, 64, 128), 0.7, "legs shoes")]
    out = assign_parts(dets, ALL, threshold=0.25)
    assert out["head"].box == (15, 2, 45, 25)  # its own label, though scored lower
    assert out["upper_body"].box == (0, 0, 64, 80) and out["upper_body"].score == pytest.approx(0.9)  # only a merged one: taken
    assert out["legs"].box == out["shoes"].box == (0, 70, 64, 128)


def test_no_detection_falls_back_to_the_prior_as_missing():
    props = assign_parts([], ALL, threshold=0.25)
    assert all(p.box is None and p.reason == "missing" for p in props.values())
    boxes = validate_parts(props, ALL, 64, 128, source="gdino", fallback=prior_boxes(64, 128, ALL))
    assert all(b.source == "prior" and b.reason == "missing" for b in boxes.values())


def test_detections_of_both_result_formats():
    torch = pytest.importorskip("torch")
    gd = {"scores": torch.tensor([0.5, 0.3]), "boxes": torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), "text_labels": ["head", "legs"]}
    assert detections_of(gd) == [det((1, 2, 3, 4), pytest.approx(0.5), "head"), det((5, 6, 7, 8), pytest.approx(0.3), "legs")]
    owl = {"scores": torch.tensor([0.2]), "boxes": torch.tensor([[1.0, 2, 3, 4]]), "labels": torch.tensor([1]), "text_labels": None}
    assert detections_of(owl, ["head", "upper body"])[0].label == "upper body"


# ----------------------------------------------------------------------------- tiny random models
@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("transformers")
    return build_expert("gdino", parts=ALL, model="tiny-random", device="cpu", batch_size=3)


SIZES = [(64, 128), (128, 256), (100, 180), (48, 160), (128, 256)]  # (W, H): the processor pads mixed sizes


def _count_forwards(expert, monkeypatch):
    seen = []
    real = expert.model.forward
    monkeypatch.setattr(expert.model, "forward", lambda *a, **k: seen.append(k["pixel_values"].shape[0]) or real(*a, **k))
    return seen


def test_tiny_gdino_gives_a_valid_box_per_part_in_one_pass_per_batch(tiny, monkeypatch):
    images = [person_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    forwards = _count_forwards(tiny, monkeypatch)
    calls, crops = tiny.calls, tiny.crops
    out = tiny.ground(images)
    assert forwards == [3, 2] and tiny.calls - calls == 2 and tiny.crops - crops == 5  # batch_size=3: two batches
    assert tiny.prompt == "head. upper body. legs. shoes." and tiny.model_type == "grounding-dino"
    for (w, h), boxes in zip(SIZES, out):
        assert tuple(boxes) == ALL
        for b in boxes.values():
            assert 0 <= b.box[0] < b.box[2] <= w and 0 <= b.box[1] < b.box[3] <= h
            assert (b.source == "prior") == (b.reason is not None) and b.source in ("gdino", "prior")
            assert b.reason is None or b.reason in REASONS
    assert any(line.startswith("gdino: ") and "forward pass(es)" in line for line in tiny.notes())


def test_boxes_come_back_in_each_crops_pixels(tiny, monkeypatch):
    """Scripted post-processed results (the real format) flow through to validated boxes; target sizes are (H, W)."""
    torch = pytest.importorskip("torch")
    seen = {}

    def scripted(outputs, input_ids, threshold, text_threshold, target_sizes):
        seen.update(threshold=threshold, text_threshold=text_threshold, sizes=list(target_sizes), ids=input_ids.shape[0])
        first = {"scores": torch.tensor([0.8, 0.6, 0.5, 0.1]), "text_labels": ["head", "upper body", "legs", "shoes"],
                 "boxes": torch.tensor([[20.0, 2, 44, 20], [8, 20, 56, 70], [12, 66, 52, 120], [14, 118, 50, 128]])}
        return [first, {"scores": torch.tensor([]), "boxes": torch.zeros(0, 4), "text_labels": []}]

    monkeypatch.setattr(tiny.processor, "post_process_grounded_object_detection", scripted)
    out = tiny.ground([person_image(64, 128), person_image(128, 256, seed=1)])
    assert seen == {"threshold": 0.25, "text_threshold": 0.25, "sizes": [(128, 64), (256, 128)], "ids": 2}
    assert out[0]["head"].box == (20, 2, 44, 20) and out[0]["head"].source == "gdino" and out[0]["head"].score == pytest.approx(0.8)
    assert out[0]["legs"].box == (12, 66, 52, 120)
    assert out[0]["shoes"].source == "prior" and out[0]["shoes"].reason == "missing"  # 0.1 is under the box threshold
    assert all(b.source == "prior" and b.reason == "missing" for b in out[1].values())


def _corners(cxcywh, sx, sy):
    cx, cy, w, h = cxcywh
    return ((cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy)


def test_saved_models_load_through_the_auto_classes(tmp_path, monkeypatch):
    """A save_pretrained folder (as hf download writes it) loads offline; MM-Grounding-DINO and OWLv2 take the same path,
    and every normalised box is scaled to its own crop (OWLv2: to the crop's padded square)."""
    pytest.importorskip("transformers")
    from muva.grounding.experts import detector_tiny

    images = [person_image(64, 128), person_image(128, 256, seed=1), person_image(96, 160, seed=2)]
    for name, (model, processor), family, cls in [
        ("mm", detector_tiny.build_tiny_grounding_dino(mm=True), "gdino", "MMGroundingDinoForObjectDetection"),
        ("owl", detector_tiny.build_tiny_owlv2(), "owlv2", "Owlv2ForObjectDetection"),
    ]:
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
        ex = build_expert("gdino", parts=ALL, model=str(tmp_path / name), device="cpu", box_threshold=0.0)
        assert type(ex.model).__name__ == cls and ex.family == family
        raw = []
        real = ex.model.forward
        monkeypatch.setattr(ex.model, "forward", lambda *a, _real=real, **k: raw.append(_real(*a, **k)) or raw[-1])
        dets = ex.detect(images)
        assert ex.calls == 1 and len(raw) == 1 and len(dets) == 3
        for i, ((w, h), crop) in enumerate(zip([im.size for im in images], dets)):
            pred = raw[0].pred_boxes[i].float().tolist()
            assert len(crop) == len(pred)  # threshold 0: every query is kept, in order
            sx, sy = (max(w, h), max(w, h)) if family == "owlv2" else (w, h)
            for d, p in zip(crop, pred):
                assert d.box == pytest.approx(_corners(p, sx, sy), abs=1e-3)
            if family == "owlv2":
                assert {d.label for d in crop} <= {"head", "upper body", "legs", "shoes"}  # one query per phrase
        out = ex.ground(images)
        assert ex.calls == 2 and [tuple(o) for o in out] == [ALL] * 3


def test_half_precision_and_a_smaller_input(monkeypatch):
    pytest.importorskip("transformers")
    ex = build_expert("gdino", model="tiny-random", device="cpu", dtype="bfloat16", longest_edge=128)
    seen = []
    real = ex.model.forward
    pixels = lambda k: (k["pixel_values"].dtype, tuple(k["pixel_values"].shape[-2:]))  # noqa: E731
    monkeypatch.setattr(ex.model, "forward", lambda *a, **k: seen.append(pixels(k)) or real(*a, **k))
    out = ex.ground([person_image(64, 128)])
    assert str(seen[0][0]) == "torch.bfloat16" and seen[0][1] == (128, 64) and tuple(out[0]) == ex.parts
    with pytest.raises(detector.DetectorError, match="longest_edge=64 is too small for Grounding DINO"):
        build_expert("gdino", model="tiny-random", device="cpu", longest_edge=64)
    owl = build_expert("gdino", model="tiny-random-owlv2", device="cpu", longest_edge=96, box_threshold=0.0)
    assert [len(d) for d in owl.detect([person_image(64, 128), person_image(128, 256)])] == [36, 36]  # 96/16 = 6x6 patches


# ----------------------------------------------------------------------------- registry, CLI, offline
def invoke(*args):
    return CliRunner().invoke(app_(), [str(a) for a in args], env={"COLUMNS": "400"})


def app_():
    from muva.cli import app

    return app


def test_registered_with_aliases_and_options_listed():
    assert "gdino" in EXPERTS.names() and EXPERTS.canonical("grounding-dino") == "gdino" == EXPERTS.canonical("detector")
    names = [i.name for i in option_infos("gdino")]
    assert names == ["model", "family", "size", "box_threshold", "text_threshold", "longest_edge", "batch_size", "device", "dtype",
                     "local_files_only"]
    res = invoke("ground", "experts", "gdino")
    assert res.exit_code == 0, res.output
    assert "Grounding DINO" in res.output and all(n in res.output for n in names)


def test_impossible_options_stop_before_any_image(tmp_path):
    market = make_market(tmp_path / "mk", n_train=1, n_query=0, n_gallery=0)
    res = invoke("ground", "run", market, "-e", "gdino", "-X", "family=owlv2", "-X", "size=tiny", "--out", tmp_path / "c.sqlite")
    assert res.exit_code == 2 and "the owlv2 family has no size 'tiny'" in res.output and not (tmp_path / "c.sqlite").exists()
    res = invoke("ground", "run", market, "-e", "gdino", "-X", "box_threshold=1.5", "--out", tmp_path / "c.sqlite")
    assert res.exit_code == 2 and "box_threshold=1.5" in res.output


def test_tiny_gdino_end_to_end_through_the_cli(tmp_path):
    pytest.importorskip("transformers")
    from muva.grounding.cache import GroundingCache

    root = make_market(tmp_path / "mk", n_train=3, n_query=0, n_gallery=0)
    out = tmp_path / "gdino.sqlite"
    res = invoke("ground", "run", root, "-e", "gdino", "-X", "model=tiny-random", "-X", "device=cpu", "-b", "2", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "gdino: 2 forward pass(es) for 3 crop(s)" in res.output
    with GroundingCache.open(out, readonly=True) as c:
        assert len(c) == 3 and c.meta["expert"] == "gdino" and c.meta["settings"]["model_type"] == "grounding-dino"
        assert c.meta["settings"]["prompt"] == "head. upper body. legs. shoes."
        for part in ALL:
            assert sum(c.stats()["sources"][part].values()) == 3
    res = invoke("ground", "stats", out)
    assert res.exit_code == 0, res.output
    assert "head" in res.output and "gdino" in res.output


def test_a_missing_model_folder_is_one_clear_error(tmp_path):
    market = make_market(tmp_path / "mk", n_train=1, n_query=0, n_gallery=0)
    t0 = time.monotonic()
    res = invoke("ground", "run", market, "-e", "gdino", "-X", "model=/nonexistent/folder", "--out", tmp_path / "g.sqlite")
    err = " ".join(res.output.split())
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output  # a message, not a traceback
    assert err.count("error:") == 1 and "model /nonexistent/folder: no model folder there (expected a folder holding config.json" in err
    assert time.monotonic() - t0 < 30 and not (tmp_path / "g.sqlite").exists()


def test_a_hub_id_absent_offline_is_a_clear_error(monkeypatch):
    pytest.importorskip("transformers")
    from muva.grounding.experts import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "in_hub_cache", lambda model_id: False)
    t0 = time.monotonic()
    with pytest.raises(detector.DetectorError, match=r"open-vocabulary detector IDEA-Research/grounding-dino-tiny is not in the local "
                                                     r"Hugging Face cache and offline mode is set \(HF_HUB_OFFLINE=1\)"):
        build_expert("gdino", size="tiny", device="cpu")
    assert time.monotonic() - t0 < 5
