"""``muva ground`` commands end to end on fabricated data: run, stats, show, eval, merge."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_grounding_common import GT_FRACTIONS, make_market, write_parts_jsonl
from typer.testing import CliRunner

from muva.cli import app
from muva.grounding.boxes import box_iou
from muva.data.synth.parts_file import PartsRecord, read_parts_jsonl
from muva.grounding.evaluate import score_boxes
from muva.grounding.experts.prior import PRIOR_FRACTIONS

runner = CliRunner()


def invoke(*args):
    res = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    return res


@pytest.fixture()
def market(tmp_path):
    return make_market(tmp_path / "mk", n_train=6, n_query=2, n_gallery=2, corrupt=1)


def test_shorthand_run_stats_and_show(market, tmp_path):
    out = tmp_path / "prior.sqlite"
    res = invoke("ground", market, "--expert", "prior", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "11 image(s) in scope" in res.output and "1 unreadable" in res.output
    res = invoke("ground", "run", market, "--expert", "prior", "--out", out, "--no-progress")
    assert "11 already cached" in res.output and "0 processed" in res.output
    res = invoke("ground", "stats", out, "--json")
    st = json.loads(res.output)
    assert st["statuses"] == {"ok": 10, "unreadable": 1} and st["sources"]["legs"] == {"prior": 10}
    res = invoke("ground", "stats", out)
    assert res.exit_code == 0 and "from prior" in res.output
    png = tmp_path / "show.png"
    res = invoke("ground", "show", out, "--out", png, "-n", "4", "--columns", "2")
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 2 * 128 and im.size[1] > 2 * 128


def test_default_out_and_shards_then_merge(market, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        res = invoke("ground", market, "-e", "prior", "--shard", f"{i}/2", "--no-progress")
        assert res.exit_code == 0, res.output
    shards = sorted((tmp_path / "runs" / "grounding").rglob("prior.shard-*-of-2.sqlite"))
    assert len(shards) == 2
    res = invoke("ground", "merge", tmp_path / "all.sqlite", *shards)
    assert res.exit_code == 0 and "11 added" in res.output, res.output


def test_eval_scores_prior_against_ground_truth(market, tmp_path):
    out = tmp_path / "prior.sqlite"
    invoke("ground", market, "-e", "prior", "--parts", "head,upper_body,legs,shoes", "--out", out, "--no-progress")
    gt = write_parts_jsonl(market)
    js = tmp_path / "scores.json"
    res = invoke("ground", "eval", out, "--gt", gt, "--json", js)
    assert res.exit_code == 0, res.output
    scores = json.loads(js.read_text())[0]
    assert scores["matched"] == 10 and scores["truth"] == 10
    by_part = {p["part"]: p for p in scores["parts"]}
    for part in ("head", "upper_body", "legs", "shoes"):
        want = box_iou(PRIOR_FRACTIONS[part], GT_FRACTIONS[part])  # IoU is scale-free per axis pair here
        assert by_part[part]["mean_iou"] == pytest.approx(want, abs=0.02)


def test_score_boxes_counts_hits_and_occlusion():
    truth = [
        PartsRecord("a.jpg", 10, 10, {"head": (0, 0, 10, 10)}),
        PartsRecord("b.jpg", 10, 10, {"head": (0, 0, 10, 10)}),
        PartsRecord("c.jpg", 10, 10, {"head": (0, 0, 10, 10)}, {"head"}),
    ]
    preds = {"a.jpg": {"head": (0, 0, 10, 10)}, "b.jpg": {"head": (0, 0, 10, 4)}, "c.jpg": {"head": (0, 0, 1, 1)}}
    s = score_boxes(preds, truth, ["head"])["head"]
    assert s.n == 2 and s.mean_iou == pytest.approx((1.0 + 0.4) / 2) and s.hit_rate == 0.5 and s.skipped_occluded == 1
    s = score_boxes(preds, truth, ["head"], include_occluded=True)["head"]
    assert s.n == 3


def test_eval_errors_are_clear(market, tmp_path):
    bad = tmp_path / "parts.jsonl"
    bad.write_text('{"path": "x.jpg", "boxes": {"head": [1, 2, 3]]}\n')
    out = tmp_path / "prior.sqlite"
    invoke("ground", market, "-e", "prior", "--out", out, "--no-progress")
    res = invoke("ground", "eval", out, "--gt", bad)
    assert res.exit_code != 0 and "parts.jsonl:1" in res.output
    other = tmp_path / "o.jsonl"
    other.write_text(json.dumps({"path": "query/none.jpg", "width": 1, "height": 1, "boxes": {"head": [0, 0, 1, 1]}}) + "\n")
    assert read_parts_jsonl(other)[0].path == "query/none.jpg"
    res = invoke("ground", "eval", out, "--gt", other)
    assert res.exit_code != 0 and "no image of" in res.output


def test_run_errors_are_clear(tmp_path):
    res = invoke("ground", tmp_path / "missing", "-e", "prior")
    assert res.exit_code != 0 and "cannot read" in res.output
    res = invoke("ground", tmp_path, "-e", "posse")
    assert res.exit_code != 0 and "pose" in res.output
    res = invoke("ground", tmp_path, "-e", "prior", "--parts", "head,tail")
    assert res.exit_code != 0 and "unknown part" in res.output
    res = invoke("ground", tmp_path, "-e", "prior", "--shard", "3/2")
    assert res.exit_code != 0 and "--shard" in res.output
    res = invoke("ground", tmp_path, "-e", "import")
    assert res.exit_code != 0 and "--masks" in res.output
    res = invoke("ground", tmp_path, "-e", "import", "-X", "mask=m.pkl")
    assert res.exit_code == 2 and "unknown option 'mask' of the import expert. Did you mean 'masks'?" in res.output
    res = invoke("ground", "stats", tmp_path / "none.sqlite")
    assert res.exit_code != 0 and "does not exist" in res.output


@pytest.mark.real_data
def test_pose_run_on_real_crops(mini_mars, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from muva.grounding.experts.pose import PoseModelError, find_pose_model

    try:
        find_pose_model()
    except PoseModelError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "pose.sqlite"
    res = invoke("ground", mini_mars, "-e", "pose", "--limit", "16", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    st = json.loads(invoke("ground", "stats", out, "--json").output)
    assert st["entries"] == 16 and st["sources"]["upper_body"].get("pose", 0) >= 10


def test_plain_image_folder_is_accepted(tmp_path):
    from test_grounding_common import person_image

    folder = tmp_path / "crops" / "cam1"
    folder.mkdir(parents=True)
    for i in range(3):
        person_image(32, 64, seed=i).save(folder / f"img{i}.png")
    out = tmp_path / "p.sqlite"
    res = invoke("ground", tmp_path / "crops", "-e", "prior", "--out", out, "--no-progress")
    assert res.exit_code == 0 and "3 image(s) in scope" in res.output, res.output
    from muva.grounding.cache import GroundingCache

    with GroundingCache.open(out, readonly=True) as c:
        assert c.keys() == {f"cam1/img{i}.png" for i in range(3)}


def test_import_run_reports_and_stats_count_empty_parts(tmp_path):
    """`muva ground run -e import` says how many imported part masks were empty; `stats` counts them."""
    import pickle
    from pathlib import Path

    import numpy as np

    from _helpers import make_market as make_real_market
    from muva.data.datasets import open_dataset

    root = make_real_market(tmp_path / "market", ids=2, cams=2)
    masks = {}
    for i, rec in enumerate(open_dataset(str(root)).train):
        m = np.ones((3, 128), dtype=bool)
        m[0] = i >= 3  # three images without a head
        masks[Path(rec.path).name] = np.where(m, 0.0, -np.inf)
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump(masks, fh)
    out = tmp_path / "import.sqlite"
    res = invoke("ground", "run", root, "-e", "import", "-X", f"masks={tmp_path / 'm.pkl'}", "--splits", "train", "--out", out,
                 "--no-progress")
    assert res.exit_code == 0, res.output
    assert "3 empty part mask(s) kept empty (head 3)" in res.output
    st = json.loads(invoke("ground", "stats", out, "--json").output)
    assert st["reasons"] == {"head": {"empty": 3}} and st["sources"]["head"] == {"import": len(masks)}
