"""Ranked-list and mask pictures: ranking rules, picture sizes, border colours, HTML, CLI."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _helpers import make_market, tiny_checkpoint
from muva.cli import app
from muva.utils.featurefiles import FeatureSet
from muva.viz.masks import MaskLayout, mask_panel, overlay, patch_to_pixels, select_layers, PART_COLOURS
from muva.viz.ranks import RankLayout, rank, visualize_ranks

runner = CliRunner()


def _unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rank_matches_brute_force_with_junk_removed():
    rng = np.random.default_rng(0)
    q, g = _unit(15, 8, 1), _unit(60, 8, 2)
    qp, gp = rng.integers(0, 5, 15), rng.integers(0, 5, 60)
    qc, gc = rng.integers(0, 3, 15), rng.integers(0, 3, 60)
    lists = rank(q, g, qp, gp, qc, gc, topk=12)
    for i, rl in enumerate(lists):
        keep = [j for j in np.argsort(-(g @ q[i]), kind="stable") if not (gp[j] == qp[i] and gc[j] == qc[i])][:12]
        assert rl.gallery.tolist() == keep
        np.testing.assert_allclose(rl.distances, 1 - g[keep] @ q[i], atol=1e-6)
        assert rl.matches.tolist() == (gp[keep] == qp[i]).tolist()
    # unknown cameras: nothing removed for the camera rule, but the query's own file is
    paths = [f"{i}.jpg" for i in range(60)]
    rl = rank(g[:3], g, gp[:3], gp, topk=5, q_paths=paths[:3], g_paths=paths)
    assert all(r.query not in r.gallery.tolist() for r in rl)
    assert all(len(r.gallery) == 5 for r in rl)


@pytest.fixture(scope="module")
def picture_sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viz")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        p = tmp / f"{i // 2:04d}_c{i % 2 + 1}s1_{i:06d}_00.jpg"
        Image.fromarray(rng.integers(0, 256, (100, 50, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    feats = _unit(12, 16, 3)
    pids = [i // 2 for i in range(12)]
    cams = [i % 2 for i in range(12)]
    fs = FeatureSet(feats, paths, pids, cams, ["query" if i % 4 == 0 else "gallery" for i in range(12)])
    return tmp, fs


def test_rank_pictures_sizes_borders_and_html(picture_sets, tmp_path):
    tmp, fs = picture_sets
    q, g = fs.split("query"), fs.split("gallery")
    layout = RankLayout(cell_w=40, cell_h=80, border=3, gap=5, sep=11, margin=7, lines=3, line_h=12)
    res = visualize_ranks(q, g, tmp_path, topk=4, num=2, seed=1, layout=layout)
    assert len(res["pngs"]) == 2 and res["html"].exists()
    k = 4
    expected = (2 * 7 + (k + 1) * (40 + 6) + 11 + (k - 1) * 5, 2 * 7 + 80 + 6 + 3 * 12 + 2)
    lists = rank(q.features, g.features, q.pids, g.pids, q.camids, g.camids, topk=k)
    for png, qpath in zip(res["pngs"], res["queries"]):
        img = Image.open(png).convert("RGB")
        assert img.size == expected
        qi = q.paths.index(qpath)
        assert img.getpixel((7 + 1, 7 + 1)) == (30, 90, 230)  # query frame is blue
        for j, ok in enumerate(lists[qi].matches, start=1):
            x = 7 + 46 + 11 + (j - 1) * 51
            assert img.getpixel((x + 1, 7 + 1)) == ((0, 170, 0) if ok else (220, 0, 0)), (png, j)
    html = res["html"].read_text()
    assert html.count("<img src='data:image/png;base64,") == 2
    assert len(re.findall(r"<tr class='(ok|bad)'>", html)) == 2 * k
    for qpath in res["queries"]:
        assert qpath.split("/")[-1] in html


def test_rank_picture_named_queries_and_unreadable_gallery(picture_sets, tmp_path):
    tmp, fs = picture_sets
    q, g = fs.split("query"), fs.split("gallery")
    g.paths[0] = str(tmp / "vanished.jpg")  # drawn as a grey tile, not a crash
    res = visualize_ranks(q, g, tmp_path, topk=10, names=[q.names[1]])
    assert res["queries"] == [q.paths[1]]
    assert Image.open(res["pngs"][0]).size == RankLayout().size(10)
    with pytest.raises(KeyError, match="not among the queries"):
        visualize_ranks(q, g, tmp_path, names=["nobody.jpg"])


def test_overlay_colours_patches():
    image = Image.new("RGB", (40, 80), (0, 0, 0))
    masks = np.zeros((2, 8), np.float32)  # grid 4×2
    masks[0, 0] = 0.9  # head: top-left patch
    masks[1, 7] = 0.2  # upper body below threshold: not drawn
    out = np.asarray(overlay(image, masks, (4, 2), ["head", "upper_body"], alpha=0.5))
    inner = out[10, 10]  # inside patch (0, 0), away from the outline
    np.testing.assert_allclose(inner, np.array(PART_COLOURS["head"]) * 0.5, atol=1)
    assert tuple(out[0, 0]) == PART_COLOURS["head"]  # outline
    assert out[70, 30].sum() == 0 and out[30, 10].sum() == 0
    assert patch_to_pixels(np.arange(8), (4, 2), (8, 4))[7, 3] == 7


def test_mask_panel_size():
    layout = MaskLayout(scale=2, gap=6, margin=6, title_h=14, legend_h=16)
    pred = np.random.default_rng(0).random((3, 3, 32))
    pseudo = np.zeros((3, 32), bool)
    panel = mask_panel(Image.new("RGB", (30, 70)), pred, (8, 4), ["head", "upper_body", "legs"], (128, 64),
                       layers=[0, 1, 2], pseudo=pseudo, layout=layout)
    n = 4  # three layers + pseudo
    assert panel.size == (2 * 6 + (n + 1) * 2 * 64 + n * 6, 2 * 6 + 14 + 2 * 128 + 16)
    assert select_layers("2,3", 3) == [1, 2]
    with pytest.raises(ValueError, match="out of range"):
        select_layers("4", 3)


def test_viz_cli(tmp_path):
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", num_classes=2)
    data = make_market(tmp_path / "market", ids=3, cams=2, train_per_cam=1, cam_shift=0, quality=75)
    feats = tmp_path / "feats"
    r = runner.invoke(app, ["extract", str(ckpt), str(data), "-o", str(feats)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["viz", "ranks", str(feats), "-o", str(tmp_path / "ranks"), "-k", "5", "--num", "3"])
    assert r.exit_code == 0, r.output
    pngs = sorted((tmp_path / "ranks").glob("rank_*.png"))
    assert len(pngs) == 3 and (tmp_path / "ranks" / "ranks.html").exists()
    assert Image.open(pngs[0]).size == RankLayout().size(5)
    # masks: final layer + every layer, with synthetic-style pseudo boxes from a parts.jsonl
    import json

    jsonl = tmp_path / "parts.jsonl"
    files = sorted((data / "query").glob("*.jpg"))
    with open(jsonl, "w") as fh:
        for f in files:
            fh.write(json.dumps({"path": f"query/{f.name}", "pid": 1, "camid": 0, "width": 64, "height": 128,
                                 "boxes": {"head": [20, 0, 44, 24], "upper_body": [8, 24, 56, 72], "legs": [12, 72, 52, 120],
                                           "shoes": [12, 120, 52, 128]}, "occluded": []}) + "\n")
    r = runner.invoke(app, ["viz", "masks", str(ckpt), str(data / "query"), "-o", str(tmp_path / "m"), "--layers", "all",
                            "--pseudo", str(jsonl), "-n", "2"])
    assert r.exit_code == 0, r.output
    panels = sorted((tmp_path / "m").glob("masks_*.png"))
    assert len(panels) == 2
    assert Image.open(panels[0]).size == MaskLayout().size(2 + 1, (128, 64))  # 2 layers + pseudo
    r = runner.invoke(app, ["viz", "masks", str(ckpt), str(files[0]), "-o", str(tmp_path / "m2")])
    assert r.exit_code == 0, r.output
    assert Image.open(next((tmp_path / "m2").glob("*.png"))).size == MaskLayout().size(1, (128, 64))
