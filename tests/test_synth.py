"""Synthetic benchmark generator: determinism, counts, layout, boxes, splits, outfit twins."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muva.data import load_dataset
from muva.data.datasets.market1501 import parse_market_filename
from muva.data.synth import SPLIT_FOLDERS, SynthConfig, format_filename, generate, parse_filename, read_parts

TINY = dict(num_domains=2, ids_per_domain=6, test_ids_per_domain=5, images_per_id=3, queries_per_id=1,
            gallery_per_id=3, distractors_per_domain=3, num_cameras=3, width=64, height=128, occlusion_prob=0.3)


def tiny(**kw) -> SynthConfig:
    return SynthConfig(**{**TINY, **kw})


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "out"
    generate(tiny(), out, progress=False)
    return out


def domains(out: Path) -> list[Path]:
    meta = json.loads((out / "synth.json").read_text())
    return [out / d["path"] for d in meta["domains"]]


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_with_one_or_two_workers(bench, tmp_path):
    again = tmp_path / "again"
    generate(tiny(), again, workers=2, progress=False)
    a, b = tree_bytes(bench), tree_bytes(again)
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k] != b[k]]
    assert different == []


def test_different_seed_different_images(bench, tmp_path):
    other = tmp_path / "other"
    generate(tiny(seed=1), other, progress=False)
    a, b = tree_bytes(bench), tree_bytes(other)
    ja = {v for k, v in a.items() if k.endswith(".jpg")}
    jb = {v for k, v in b.items() if k.endswith(".jpg")}
    assert len(ja) == len(jb) == tiny().num_images  # same plan shape, every image unique
    assert not ja & jb
    assert a["domain_0/parts.jsonl"] != b["domain_0/parts.jsonl"]


# ----------------------------------------------------------------------------- counts and layout
def test_counts_per_split(bench):
    cfg = tiny()
    meta = json.loads((bench / "synth.json").read_text())
    assert len(meta["domains"]) == cfg.num_domains
    assert meta["num_images"] == cfg.num_images
    for root in domains(bench):
        n = {s: len(list((root / f).glob("*.jpg"))) for s, f in SPLIT_FOLDERS.items()}
        assert n["train"] == cfg.ids_per_domain * cfg.images_per_id
        assert n["query"] == cfg.test_ids_per_domain * cfg.queries_per_id
        assert n["gallery"] == cfg.test_ids_per_domain * cfg.gallery_per_id + cfg.distractors_per_domain
        assert len(read_parts(root)) == sum(n.values())
        dmeta = json.loads((root / "domain.json").read_text())
        assert dmeta["num_images"] == sum(n.values())
        assert dmeta["splits"]["train"]["identities"] == cfg.ids_per_domain


def test_market_parser_reads_every_domain_unchanged(bench):
    cfg = tiny()
    all_pids: list[set[int]] = []
    for root in domains(bench):
        ds = load_dataset("market1501", root)
        assert len(ds.train) == cfg.ids_per_domain * cfg.images_per_id
        assert len(ds.query) == cfg.test_ids_per_domain * cfg.queries_per_id
        assert len(ds.gallery) == cfg.test_ids_per_domain * cfg.gallery_per_id + cfg.distractors_per_domain
        train_pids, test_pids = {r.pid for r in ds.train}, {r.pid for r in ds.query}
        assert len(train_pids) == cfg.ids_per_domain and len(test_pids) == cfg.test_ids_per_domain
        assert not train_pids & test_pids
        assert {r.pid for r in ds.gallery} == test_pids | {0}
        assert sum(r.pid == 0 for r in ds.gallery) == cfg.distractors_per_domain
        assert {r.camid for r in ds.train + ds.query + ds.gallery} <= set(range(cfg.num_cameras))
        all_pids.append(train_pids | test_pids)
    assert not all_pids[0] & all_pids[1], "identity numbers must be disjoint across domains"


def test_images_are_jpeg_of_the_configured_size(bench):
    root = domains(bench)[0]
    files = sorted(root.rglob("*.jpg"))
    for p in files[::5]:
        assert p.read_bytes()[:3] == b"\xff\xd8\xff"
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (64, 128) and im.mode == "RGB"


# ----------------------------------------------------------------------------- file names
@pytest.mark.parametrize("pid,camid,frame,seq,box", [(0, 0, 0, 1, 0), (1, 2, 451, 1, 3), (9999, 8, 999999, 9, 99), (42, 5, 17, 6, 1)])
def test_filename_round_trip(pid, camid, frame, seq, box):
    name = format_filename(pid, camid, frame, seq=seq, box=box)
    assert len(name) == len("PPPP_cCsS_FFFFFF_NN.jpg")
    assert parse_filename(name) == {"pid": pid, "camid": camid, "seq": seq, "frame": frame, "box": box}
    assert parse_market_filename(name) == (pid, camid)


def test_filename_rejects_what_market_cannot_hold():
    with pytest.raises(ValueError):
        format_filename(10000, 0, 1)
    with pytest.raises(ValueError):
        format_filename(1, 9, 1)
    with pytest.raises(ValueError):
        parse_filename("0001_c1_f0046182.jpg")


def test_generated_names_agree_with_parts_records(bench):
    for root in domains(bench):
        for path, rec in read_parts(root).items():
            assert (root / path).is_file()
            parsed = parse_filename(path)
            assert (parsed["pid"], parsed["camid"]) == (rec.pid, rec.camid)
            assert path.split("/")[0] in SPLIT_FOLDERS.values()


# ----------------------------------------------------------------------------- boxes
def test_boxes_inside_image_and_in_vertical_order(bench):
    n = 0
    for root in domains(bench):
        for rec in read_parts(root).values():
            w, h = rec.width, rec.height
            assert (w, h) == (64, 128)
            b = rec.boxes
            assert list(b) == ["head", "upper_body", "legs", "shoes"]
            for part, (x0, y0, x1, y1) in b.items():
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (rec.path, part, b[part])
                assert all(isinstance(v, float) for v in b[part])
            cy = {p: (b[p][1] + b[p][3]) / 2 for p in b}
            assert b["head"][1] < b["upper_body"][1] < b["legs"][1] < b["shoes"][1], rec.path
            assert cy["head"] < cy["upper_body"] < cy["legs"] < cy["shoes"], rec.path
            assert b["head"][3] <= b["upper_body"][3] <= b["legs"][3] and b["shoes"][3] <= h
            assert b["head"][3] <= b["legs"][1], "head and legs must not overlap"
            assert set(rec.occluded) <= set(b)
            n += 1
    assert n == tiny().num_images


def test_boxes_cover_the_drawn_person():
    """On a flat canvas, every part box is mostly covered by the figure's pixels."""
    from muva.data.synth.appearance import random_identity
    from muva.data.synth.figure import sample_pose
    from muva.data.synth.render import draw_person

    bg = (0, 255, 0)
    for k in range(8):
        rng = np.random.default_rng(k)
        ident = random_identity(rng, k, 1, "mild")
        pose = sample_pose(rng, ident, (0.25, 0.25, 0.25, 0.25), 0.88, (128, 256), occlusion_prob=0.0)
        canvas = Image.new("RGB", (128, 256), bg)
        boxes = draw_person(canvas, ident, pose)
        drawn = np.any(np.asarray(canvas) != bg, axis=2)
        for part, (x0, y0, x1, y1) in boxes.items():
            sub = drawn[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
            assert sub.size and sub.mean() > 0.3, (k, pose.view, part, sub.mean())
        # nothing is drawn above the head box (the head box reaches the top of hair and hats)
        y0 = min(b[1] for b in boxes.values())
        assert y0 == boxes["head"][1]
        assert not drawn[: max(0, int(y0) - 1)].any()


# ----------------------------------------------------------------------------- query / gallery
def test_every_query_has_a_cross_camera_gallery_match(bench):
    cfg = tiny()
    for root in domains(bench):
        ds = load_dataset("market1501", root)
        gallery = defaultdict(set)
        for r in ds.gallery:
            gallery[r.pid].add(r.camid)
        query_cams = defaultdict(list)
        for q in ds.query:
            query_cams[q.pid].append(q.camid)
            assert gallery[q.pid] - {q.camid}, f"query {q.path} has no gallery image of its identity under another camera"
        for cams in query_cams.values():
            assert len(cams) == len(set(cams)) == cfg.queries_per_id


def test_queries_use_distinct_cameras_with_several_queries(tmp_path):
    out = tmp_path / "q"
    generate(tiny(num_domains=1, queries_per_id=2, gallery_per_id=1, distractors_per_domain=0), out, progress=False)
    ds = load_dataset("market1501", out / "domain_0")
    by = defaultdict(list)
    for q in ds.query:
        by[q.pid].append(q.camid)
    g = {r.pid: r.camid for r in ds.gallery}
    for pid, cams in by.items():
        assert len(set(cams)) == 2 and g[pid] not in cams


# ----------------------------------------------------------------------------- outfit twins
def test_a_fifth_of_identities_share_top_and_lower_colours(bench):
    for root in domains(bench):
        idents = [json.loads(line) for line in (root / "identities.jsonl").open()]
        for split in ("train", "test"):
            group = [i for i in idents if i["split"] == split]
            outfits = defaultdict(list)
            for i in group:
                outfits[(i["top_colour"], i["lower_colour"])].append(i)
            sharing = [i for v in outfits.values() if len(v) > 1 for i in v]
            assert len(sharing) / len(group) >= 0.2, (root.name, split, len(sharing), len(group))
            for i in group:
                if i["twin_of"] > 0:
                    base = next(b for b in group if b["pid"] == i["twin_of"])
                    same = ("top_colour", "top_colour2", "sleeves", "pattern", "lower", "lower_colour", "height", "girth")
                    assert all(i[k] == base[k] for k in same)
                    differs = [(i["hair_style"], i["hair_colour"], i["hat"]) != (base["hair_style"], base["hair_colour"], base["hat"]),
                               i["shoe_colour"] != base["shoe_colour"],
                               (i["bag"], i["bag_colour"]) != (base["bag"], base["bag_colour"])]
                    assert sum(differs) >= 2


def test_shared_fraction_follows_the_config():
    from muva.data.synth import make_identities

    people = make_identities(0, 0, list(range(40)), list(range(1, 41)), season="mild", shared_fraction=0.5)
    assert sum(p.twin_of > 0 for p in people) == 10
    none = make_identities(0, 0, list(range(40)), list(range(1, 41)), season="mild", shared_fraction=0.0)
    assert all(p.twin_of == -1 for p in none)


# ----------------------------------------------------------------------------- domains differ
def test_domains_differ_in_style(bench):
    metas = [json.loads((r / "domain.json").read_text())["style"] for r in domains(bench)]
    keys = ("brightness", "gamma", "saturation", "contrast", "jpeg_quality", "resolution", "noise")
    assert sum(metas[0][k] != metas[1][k] for k in keys) >= 5
    assert metas[0]["background"] != metas[1]["background"]
    means = []
    for root in domains(bench):
        files = sorted((root / "bounding_box_train").glob("*.jpg"))
        means.append(np.mean([np.asarray(Image.open(p), dtype=np.float32).mean(axis=(0, 1)) for p in files], axis=0))
    assert np.abs(means[0] - means[1]).max() > 5.0


def test_style_strength_zero_gives_neutral_domains():
    from muva.data.synth import make_domain_style

    a, b = make_domain_style(tiny(style_strength=0.0), 0), make_domain_style(tiny(style_strength=0.0), 1)
    assert a.gamma == b.gamma == 1.0 and a.cast == b.cast == (1.0, 1.0, 1.0)


# ----------------------------------------------------------------------------- output folder handling
def test_rerun_is_skipped_and_other_config_needs_overwrite(bench, tmp_path):
    from muva.data.synth import SynthError

    out = tmp_path / "o"
    cfg = tiny(num_domains=1)
    generate(cfg, out, progress=False)
    stamp = (out / "domain_0" / "parts.jsonl").stat().st_mtime_ns
    assert generate(cfg, out, progress=False).get("skipped") is True
    assert (out / "domain_0" / "parts.jsonl").stat().st_mtime_ns == stamp
    with pytest.raises(SynthError, match="--overwrite"):
        generate(tiny(num_domains=1, seed=5), out, progress=False)
    meta = generate(tiny(num_domains=1, seed=5), out, progress=False, overwrite=True)
    assert not meta.get("skipped") and meta["seed"] == 5
    (out / "mine.txt").write_text("user file")
    with pytest.raises(SynthError, match="did not write"):
        generate(tiny(num_domains=1, seed=6), out, progress=False, overwrite=True)


def test_synth_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, muva.data.synth, muva.data.synth.commands; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_plan_constraints_hold_at_scale():
    """The split plan (no rendering) of a large domain: cross-camera matches, twins, disjoint ids."""
    from muva.data.synth import plan_domain

    cfg = SynthConfig(num_domains=2, ids_per_domain=150, test_ids_per_domain=150, images_per_id=2, queries_per_id=1,
                      gallery_per_id=1, num_cameras=2, distractors_per_domain=10)
    plans = [plan_domain(cfg, k) for k in range(2)]
    for plan in plans:
        q = {j.identity.pid: j.camid for j in plan.jobs if j.split == "query"}
        g = defaultdict(set)
        for j in plan.jobs:
            if j.split == "bounding_box_test":
                g[j.identity.pid].add(j.camid)
        assert all(g[pid] - {cam} for pid, cam in q.items())
        assert len(g[0]) >= 1 and sum(j.identity.pid == 0 for j in plan.jobs) == 10
        train = [j for j in plan.jobs if j.split == "bounding_box_train"]
        cams = defaultdict(set)
        for j in train:
            cams[j.identity.pid].add(j.camid)
        assert all(len(c) == 2 for c in cams.values()), "two images of an identity come from two cameras"
        names = [j.filename for j in plan.jobs]
        assert len(set(names)) == len(names)
        for group in (plan.train_ids, plan.test_ids):
            assert sum(i.twin_of > 0 for i in group) * 2 / len(group) >= cfg.shared_outfit_fraction
    pids = [{i.pid for i in p.train_ids + p.test_ids} for p in plans]
    assert not pids[0] & pids[1]
