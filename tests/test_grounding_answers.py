"""``muva ground import-answers``: answers made elsewhere → a grounding cache (schemas, formats, bad lines, idempotence)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
from test_grounding_common import make_market
from typer.testing import CliRunner

from muva import cli
from muva.data.parts import DEFAULT_PARTS, get_part
from muva.grounding.answers import ImageIndex, part_of, read_answers
from muva.grounding.boxes import prior_boxes
from muva.grounding.cache import GroundingCache
from muva.grounding.run import resolve_images

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
W, H = 64, 128  # size of the fabricated crops


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return make_market(tmp_path_factory.mktemp("answers") / "mk", n_train=4, n_query=1, n_gallery=1, corrupt=1)


@pytest.fixture(scope="module")
def keys(market):
    """Cache keys of the readable images (bounding_box_train/..., query/..., ...), sorted; the corrupt file last."""
    good = sorted(p.relative_to(market).as_posix() for p in market.rglob("*.jpg") if not p.name.startswith("0090"))
    return good + [f"bounding_box_train/{p.name}" for p in (market / "bounding_box_train").glob("0090*.jpg")]


def write(path: Path, lines) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def entries(cache_path) -> dict:
    with GroundingCache.open(cache_path, readonly=True) as c:
        return {e.path: e for e in c}


def import_answers(tmp_path, lines, *extra, fmt="cogvlm", market=None, name="a.jsonl"):
    src = write(tmp_path / name, lines)
    out = tmp_path / "out.sqlite"
    return invoke("ground", "import-answers", src, "--format", fmt, "--dataset", market, "--out", out, "--no-progress", *extra), out


def approx_box(box):
    return pytest.approx(box, abs=0.011)  # boxes are stored rounded to 0.01 px


# ----------------------------------------------------------------------------- schemas and formats
def test_cogvlm_one_part_per_line_thousandths_become_crop_pixels(market, keys, tmp_path):
    k = keys[0]
    lines = [
        {"image": k, "part": "head", "answer": "The head is at [[300,20,700,160]]."},
        {"image": k, "part": "upper body", "answer": "[[150,160,850,550]]"},  # a phrase
        {"path": k, "part": "legs", "answer": "[[200,550,480,930;520,550,800,930]]"},  # "path" alias; left + right legs
    ]
    res, out = import_answers(tmp_path, lines, market=market)
    assert res.exit_code == 0, res.output
    got = entries(out)
    assert list(got) == [k]  # only answered images are written
    e = got[k]
    assert (e.status, e.width, e.height) == ("ok", W, H)
    assert e.boxes["head"].box == approx_box((0.3 * W, 0.02 * H, 0.7 * W, 0.16 * H))
    assert e.boxes["upper_body"].box == approx_box((0.15 * W, 0.16 * H, 0.85 * W, 0.55 * H))
    assert e.boxes["legs"].box == approx_box((0.2 * W, 0.55 * H, 0.8 * W, 0.93 * H))  # the union of both boxes
    assert {b.source for b in e.boxes.values()} == {"answers-cogvlm"} and all(b.reason is None for b in e.boxes.values())
    assert "1 of 7 image(s) answered" in res.output and "answers-cogvlm" in res.output
    st = invoke("ground", "stats", out)
    assert st.exit_code == 0 and "expert answers-cogvlm" in st.output and "from answers-cogvlm" in st.output, st.output


def test_qwen25_answers_object_scaled_by_input_size(market, keys, tmp_path):
    qwen = lambda label, b: json.dumps([{"bbox_2d": b, "label": label}])  # noqa: E731
    lines = [
        # pixels of a 128x256 model input (twice the crop): halved
        {"image": keys[0], "input_size": [128, 256], "answers": {"head": qwen("head", [40, 4, 90, 40]), "upper_body": qwen("upper body", [20, 40, 110, 140])}},
        # no input_size: read as crop pixels, and a note says so
        {"image": keys[1], "answers": {"head": "```json\n" + qwen("head", [20, 2, 45, 20]) + "\n```"}},
    ]
    res, out = import_answers(tmp_path, lines, fmt="qwen2.5", market=market)
    assert res.exit_code == 0, res.output
    got = entries(out)
    assert got[keys[0]].boxes["head"].box == approx_box((20, 2, 45, 20))
    assert got[keys[0]].boxes["upper_body"].box == approx_box((10, 20, 55, 70))
    assert got[keys[1]].boxes["head"].box == approx_box((20, 2, 45, 20))
    assert list(got[keys[0]].boxes) == ["head", "upper_body"]  # default parts: those the file names
    assert got[keys[0]].boxes["head"].source == "answers-qwen2.5"
    assert "without \"input_size\"" in res.output and "1 qwen2.5 line(s)" in res.output
    # an image asked about the head only: upper_body is the prior's box, reason missing
    ub = got[keys[1]].boxes["upper_body"]
    assert (ub.source, ub.reason) == ("prior", "missing") and ub.box == approx_box(prior_boxes(W, H, ["upper_body"])["upper_body"].box)


def test_one_rel1000_answer_naming_every_part(market, keys, tmp_path):
    answer = ("<|object_ref_start|>head<|object_ref_end|><|box_start|>(300,20),(700,160)<|box_end|> "
              "<|object_ref_start|>upper body<|object_ref_end|><|box_start|>(150,160),(850,550)<|box_end|>")
    lines = [{"image": keys[0], "answer": answer}, {"image": keys[1], "answer": "I cannot see a person."}]
    res, out = import_answers(tmp_path, lines, fmt="rel1000", market=market)
    assert res.exit_code == 0, res.output
    got = entries(out)
    e = got[keys[0]]
    assert list(e.boxes) == list(DEFAULT_PARTS)  # an answer for every part: MUVA's parts
    assert e.boxes["head"].box == approx_box((0.3 * W, 0.02 * H, 0.7 * W, 0.16 * H))
    assert e.boxes["upper_body"].via == "joint" and e.boxes["upper_body"].source == "answers-rel1000"
    assert (e.boxes["legs"].source, e.boxes["legs"].reason) == ("prior", "missing")  # the answer names no legs
    assert {b.reason for b in got[keys[1]].boxes.values()} == {"unparsable"}  # no box at all


def test_per_line_format_overrides_and_validation_fallbacks(market, keys, tmp_path):
    lines = [
        {"image": keys[0], "part": "head", "answer": "[[400,10,420,12]]"},  # 1.3 x 0.3 px: tiny
        {"image": keys[0], "part": "legs", "format": "gdino", "answer": {"boxes": [[0.5, 0.75, 0.6, 0.4]], "scores": [0.8]}},
        {"image": keys[0], "part": "upper_body", "answer": "no box here"},
    ]
    res, out = import_answers(tmp_path, lines, market=market)
    assert res.exit_code == 0, res.output
    b = entries(out)[keys[0]].boxes
    assert (b["head"].source, b["head"].reason) == ("prior", "tiny")
    assert (b["upper_body"].source, b["upper_body"].reason) == ("prior", "unparsable")
    assert b["legs"].box == approx_box((0.2 * W, 0.55 * H, 0.8 * W, 0.95 * H)) and b["legs"].score == pytest.approx(0.8)
    assert "fallback tiny" in res.output and "fallback unparsable" in res.output


# ----------------------------------------------------------------------------- bad lines, errors, repeats
def test_bad_lines_are_reported_and_the_good_ones_imported(market, keys, tmp_path):
    good = {"image": keys[0], "part": "head", "answer": "[[300,20,700,160]]"}
    lines = [
        good,                                                   # 1
        "{not json",                                            # 2
        "[1, 2, 3]",                                            # 3 not an object
        {"part": "head", "answer": "[[1,2,3,4]]"},              # 4 no image
        {"image": keys[1], "part": "head"},                     # 5 no answer
        {"image": keys[1], "part": "hat", "answer": "[[1,2,3,4]]"},          # 6 unknown part
        {"image": "elsewhere/9999_c1s1_000001_00.jpg", "part": "head", "answer": "[[1,2,3,4]]"},  # 7 unknown image
        {"image": keys[1], "part": "head", "format": "yolo", "answer": "x"},  # 8 unknown format
        {"image": keys[1], "part": "head", "input_size": [0, 5], "answer": "x"},  # 9 bad input_size
        "",                                                     # blank: not a line
        {"image": keys[0], "part": "head", "answer": "[[310,20,700,160]]"},  # 11 same image+part: wins over line 1
        {"image": Path(market / keys[2]).as_posix(), "part": "legs", "answer": "[[200,550,800,930]]"},  # absolute path: fine
    ]
    report = tmp_path / "report.json"
    res, out = import_answers(tmp_path, lines, "--report", report, market=market)
    assert res.exit_code == 0, res.output
    got = entries(out)
    assert set(got) == {keys[0], keys[2]}
    assert got[keys[0]].boxes["head"].box[0] == pytest.approx(0.31 * W, abs=0.011)  # the later line won
    rep = json.loads(report.read_text())
    assert rep["bad"] == {"not JSON": 1, "not an object": 1, "no image": 1, "no answer": 1, "unknown part": 1,
                          "unknown image": 1, "unknown format": 1, "bad input_size": 1}
    assert rep["bad_where"]["not JSON"] == ["a.jsonl:2"] and rep["bad_where"]["unknown image"] == ["a.jsonl:7"]
    assert rep["bad_examples"]["unknown part"] == "hat" and rep["bad_examples"]["unknown format"] == "yolo"
    assert (rep["lines"], rep["good_lines"], rep["superseded"]) == (11, 3, 1) and rep["superseded_where"] == ["a.jsonl:1 (head)"]
    assert rep["unanswered"] == 5 and rep["written"] == 2
    for text in ("bad lines", "a.jsonl:2", "a.jsonl:6", "elsewhere/9999", "superseded", "5 image(s)", "grounding.missing"):
        assert text in res.output, (text, res.output)


def test_an_all_bad_file_is_one_clear_error(market, tmp_path):
    res, out = import_answers(tmp_path, ["oops", '{"image": "nowhere.jpg", "part": "head", "answer": "[[1,2,3,4]]"}'], market=market)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "nothing to import" in res.output and "not JSON 1 (at a.jsonl:1" in res.output and "nowhere.jpg" in res.output
    assert "Traceback" not in res.output and not out.exists()
    empty = write(tmp_path / "empty.jsonl", [""])
    res = invoke("ground", "import-answers", empty, "-f", "cogvlm", "-d", market, "--out", out)
    assert res.exit_code == 2 and "no answer line" in res.output
    res = invoke("ground", "import-answers", tmp_path / "absent.jsonl", "-f", "cogvlm", "-d", market)
    assert res.exit_code == 2 and "not found" in res.output
    res = invoke("ground", "import-answers", empty, "-f", "yolo", "-d", market)
    assert res.exit_code == 2 and "unknown answer format" in res.output


def test_importing_twice_gives_the_same_cache_and_unreadable_images_are_recorded(market, keys, tmp_path):
    lines = [{"image": k, "answers": {"head": "[[300,20,700,160]]", "legs": "[[200,550,800,930]]"}} for k in keys]
    res, out = import_answers(tmp_path, lines, market=market)
    assert res.exit_code == 0, res.output
    first = {k: (e.status, e.to_json()) for k, e in entries(out).items()}
    res = invoke("ground", "import-answers", tmp_path / "a.jsonl", "-f", "cogvlm", "-d", market, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert {k: (e.status, e.to_json()) for k, e in entries(out).items()} == first
    assert len(first) == len(keys) == 7
    bad = first[keys[-1]]
    assert bad[0] == "unreadable" and json.loads(bad[1])["error"].startswith("unreadable:")
    st = json.loads(invoke("ground", "stats", out, "--json").output)
    assert st["statuses"] == {"ok": 6, "unreadable": 1} and st["meta"]["expert"] == "answers-cogvlm"
    assert st["meta"]["parts"] == ["head", "legs"] and st["sources"]["head"] == {"answers-cogvlm": 6}
    assert "(1 unreadable)" in res.output


def test_default_out_expert_name_and_parts(market, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write(tmp_path / "a.jsonl", [{"image": keys[0], "part": "head", "answer": "[[300,20,700,160]]"},
                                       {"image": keys[0], "part": "shoes", "answer": "[[250,900,750,990]]"}])
    res = invoke("ground", "import-answers", src, "-f", "cogvlm", "-d", market, "--expert-name", "cog17b",
                 "--parts", "head,upper_body", "--no-progress")
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "grounding" / "mk" / "cog17b.sqlite"
    e = entries(out)[keys[0]]
    assert list(e.boxes) == ["head", "upper_body"] and e.boxes["head"].source == "cog17b"
    assert "shoes 1" in res.output  # answers of parts not imported are said to be ignored
    res = invoke("ground", "import-answers", src, "-f", "cogvlm", "-d", market, "--expert-name", "../x", "--no-progress")
    assert res.exit_code == 2 and "--expert-name" in res.output


# ----------------------------------------------------------------------------- library pieces
def test_part_names_and_image_lookup(market, keys, tmp_path):
    assert [part_of(t) for t in ("upper_body", "Upper Body", "upper-body", "legs", "hat", 3)] == ["upper_body"] * 3 + ["legs", None, None]
    index = ImageIndex(resolve_images(str(market)))
    assert index.lookup(keys[0]) == (keys[0], False)
    assert index.lookup("./" + keys[0].replace("/", "\\")) == (keys[0], False)  # Windows separators, ./ prefix
    assert index.lookup(str(market / keys[0])) == (keys[0], False)
    assert index.lookup("/elsewhere/" + Path(keys[0]).name) == (keys[0], True)  # a unique file name
    assert index.lookup("nope.jpg") == (None, False)
    src = write(tmp_path / "b.jsonl", [{"image": keys[0], "part": "head", "answer": "x"}, {"image": keys[0], "answer": "y"}])
    col = read_answers([src], index, "cogvlm")
    assert col.good == 2 and col.named_parts == {"head"} and col.joint == 1 and [c.part for c in col.claims[keys[0]]] == ["head", None]


def test_the_cogvlm_recipe_compiles_without_muva_and_asks_muvas_question():
    path = REPO / "docs" / "recipes" / "cogvlm_grounding.py"
    tree = ast.parse(path.read_text())
    compile(tree, str(path), "exec")
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "muva" not in imported
    spec = importlib.util.spec_from_file_location("cogvlm_recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)  # torch / transformers are imported only by main()
    assert recipe.PHRASES == {p: get_part(p).phrase for p in recipe.PHRASES} and set(DEFAULT_PARTS) <= set(recipe.PHRASES)
    from muva.grounding.experts.mllm_prompts import question

    for part in recipe.PHRASES:
        assert recipe.INSTRUCTION.format(phrase=recipe.PHRASES[part]) == question(part, "muva")


def test_several_files_a_later_file_wins(market, keys, tmp_path):
    a = write(tmp_path / "a.jsonl", [{"image": keys[0], "part": "head", "answer": "[[300,20,700,160]]"}])
    b = write(tmp_path / "b.jsonl", [{"image": keys[0], "part": "head", "answer": "[[350,20,700,160]]"},
                                     {"image": keys[1], "part": "head", "answer": "[[300,20,700,160]]"}])
    out = tmp_path / "out.sqlite"
    res = invoke("ground", "import-answers", a, b, "-f", "cogvlm", "-d", market, "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    got = entries(out)
    assert set(got) == {keys[0], keys[1]} and got[keys[0]].boxes["head"].box[0] == pytest.approx(0.35 * W, abs=0.011)
    assert "a.jsonl:1 (head)" in res.output
