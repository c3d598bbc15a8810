"""The grounding cache: resume after a kill, unreadable images, shards + merge, pseudo masks."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_grounding_common import make_market

from muva.grounding.boxes import PartBox
from muva.grounding.cache import CacheEntry, GroundingCache, GroundingCacheError, merge_caches, parse_shard, shard_of, shard_path
from muva.grounding.experts.prior import PriorExpert, prior_boxes
from muva.grounding.masks import boxes_to_patch_masks, load_pseudo_masks
from muva.grounding.run import ground_images, resolve_images

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def market(tmp_path):
    return make_market(tmp_path / "mk", n_train=10, n_query=2, n_gallery=4, corrupt=1)


def test_entry_roundtrip_with_masks(tmp_path):
    boxes = prior_boxes(64, 128)
    masks = {p: np.random.default_rng(0).random(128) > 0.5 for p in boxes}
    with GroundingCache.open(tmp_path / "c.sqlite", meta={"root": str(tmp_path), "parts": list(boxes), "expert": "import"}) as c:
        c.add(CacheEntry("a/x.jpg", "ok", 64, 128, boxes, None, masks, (16, 8)))
        assert c.get("a/x.jpg").status == "ok"
    with GroundingCache.open(tmp_path / "c.sqlite", readonly=True) as c:
        got = c.get(tmp_path / "a" / "x.jpg")  # absolute path under the root
        assert got.width == 64 and set(got.boxes) == set(boxes)
        assert got.boxes["head"].box == pytest.approx(boxes["head"].box, abs=0.01)
        m = got.patch_masks(list(boxes), (16, 8))
        assert (m == np.stack([masks[p] for p in boxes])).all()
        assert got.patch_masks(list(boxes), (8, 4)) is None
        assert c.get("elsewhere/x.jpg") is not None  # unique file-name fallback
        assert c.get("nothere.jpg") is None


def test_meta_mismatch_is_an_error(tmp_path):
    path = tmp_path / "c.sqlite"
    GroundingCache.open(path, meta={"root": "/a", "parts": ["head"], "expert": "pose"}).close()
    with pytest.raises(GroundingCacheError, match="expert"):
        GroundingCache.open(path, meta={"root": "/a", "parts": ["head"], "expert": "prior"})
    (tmp_path / "junk.sqlite").write_bytes(b"this is no database" * 100)
    with pytest.raises(GroundingCacheError, match="not a muva grounding cache"):
        GroundingCache.open(tmp_path / "junk.sqlite", readonly=True)


def test_run_records_unreadable_and_resumes(market, tmp_path):
    images = resolve_images(str(market))
    assert len(images.paths) == 17
    out = tmp_path / "prior.sqlite"
    s1 = ground_images(images, PriorExpert(), out, batch_size=4, limit=6, progress=False)
    assert s1.processed == 6
    s2 = ground_images(images, PriorExpert(), out, batch_size=4, progress=False)
    assert s2.already_done == 6 and s2.processed == 11 and s2.unreadable == 1
    with GroundingCache.open(out, readonly=True) as c:
        assert len(c) == 17 and c.counts() == {"ok": 16, "unreadable": 1}
        bad = [e for e in c if e.status == "unreadable"][0]
        assert bad.error.startswith("unreadable") and "0090_" in bad.path
        st = c.stats()
        assert st["sources"]["head"] == {"prior": 16} and st["errors"] == {"unreadable": 1}
    s3 = ground_images(images, PriorExpert(), out, progress=False)
    assert s3.processed == 0 and s3.already_done == 17


def test_shards_partition_and_merge(market, tmp_path):
    images = resolve_images(str(market))
    files = []
    for i in range(3):
        f = shard_path(tmp_path / "prior.sqlite", (i, 3))
        ground_images(images, PriorExpert(), f, shard=(i, 3), progress=False)
        files.append(f)
    sizes = []
    keys = set()
    for f in files:
        with GroundingCache.open(f, readonly=True) as c:
            sizes.append(len(c))
            assert not (c.keys() & keys)
            keys |= c.keys()
    assert sum(sizes) == 17 and len(keys) == 17
    counts = merge_caches(tmp_path / "all.sqlite", files)
    assert counts["added"] == 17 and counts["total"] == 17 and counts["duplicates"] == 0
    again = merge_caches(tmp_path / "all.sqlite", files[:1])
    assert again["added"] == 0 and again["duplicates"] == sizes[0]
    other = tmp_path / "pose.sqlite"
    GroundingCache.open(other, meta={"root": str(images.root), "parts": ["head", "upper_body", "legs"], "expert": "pose"}).close()
    with pytest.raises(GroundingCacheError, match="expert"):
        merge_caches(tmp_path / "x.sqlite", [files[0], other])


def test_parse_shard_and_stability():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert shard_of("bounding_box_train/0001_c1s1_000001_00.jpg", 7) == shard_of("bounding_box_train/0001_c1s1_000001_00.jpg", 7)


_SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    from muva.grounding.experts.prior import PriorExpert
    from muva.grounding.run import ground_images, resolve_images

    class Slow(PriorExpert):
        def ground(self, images):
            time.sleep(0.05)
            return super().ground(images)

    ground_images(resolve_images(sys.argv[1]), Slow(), sys.argv[2], batch_size=4, progress=False)
    """
)


def _count(path: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return con.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_kill_minus_nine_then_resume_loses_nothing(tmp_path):
    root = make_market(tmp_path / "big", n_train=48, n_query=4, n_gallery=8)
    out = tmp_path / "slow.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(root), str(out)], env=env)
    deadline = time.time() + 60
    try:
        while _count(out) < 12 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = _count(out)
    assert 12 <= before < 60
    assert before % 4 == 0  # whole batches only: a transaction is all or nothing
    summary = ground_images(resolve_images(str(root)), PriorExpert(), out, batch_size=4, progress=False)
    assert summary.already_done == before and summary.processed == 60 - before
    with GroundingCache.open(out, readonly=True) as c:
        assert len(c) == 60 and len(c.keys()) == 60 and c.counts() == {"ok": 60}


def test_load_pseudo_masks(market, tmp_path):
    images = resolve_images(str(market))
    out = tmp_path / "prior.sqlite"
    with pytest.raises(GroundingCacheError, match="muva ground run"):
        load_pseudo_masks(images.paths, out)
    ground_images(images, PriorExpert(), out, progress=False)
    from muva.data import open_dataset

    ds = open_dataset(str(market))
    with pytest.raises(GroundingCacheError, match="1 unreadable"):
        load_pseudo_masks(ds, out)
    masks = load_pseudo_masks(ds, out, input_size=(256, 128), stride=16, missing="skip")
    assert set(masks) == {r.path for r in ds.train if "0090_" not in r.path}
    m = next(iter(masks.values()))
    assert m.shape == (3, 128) and m.dtype == bool and m.any(axis=1).all()
    expected = boxes_to_patch_masks(prior_boxes(64, 128), (64, 128))
    assert (m == expected).all()
    # The corrupt training image is unreadable in the cache: an error by default, prior on request.
    corrupt = [r.path for r in ds.train if "0090_" in r.path]
    assert len(corrupt) == 1
    fixed = load_pseudo_masks(corrupt, out, missing="prior")
    assert fixed[corrupt[0]].shape == (3, 128) and fixed[corrupt[0]].any(axis=1).all()
    with pytest.raises(GroundingCacheError, match="1 absent"):
        load_pseudo_masks([str(tmp_path / "nowhere.jpg")], out)
    with pytest.raises(GroundingCacheError, match="shoes"):
        load_pseudo_masks(images.paths, out, parts=("head", "shoes"))
    # Other input size / stride: masks follow the grid.
    m2 = load_pseudo_masks(images.paths[:1], out, input_size=(384, 128), stride=16)
    assert next(iter(m2.values())).shape == (3, 24 * 8)


def test_partbox_sources_survive_storage(tmp_path):
    b = {"head": PartBox((1, 2, 3, 4), 0.9, "pose"), "legs": PartBox((1, 5, 3, 9), 0.25, "prior", "invisible")}
    with GroundingCache.open(tmp_path / "c.sqlite", meta={"root": "/r", "parts": ["head", "legs"], "expert": "pose"}) as c:
        c.add(CacheEntry("k.jpg", "ok", 10, 10, b))
        assert c.stats()["reasons"] == {"legs": {"invisible": 1}}


def test_hot_journal_of_a_killed_writer_is_rolled_back(tmp_path):
    """Copy a cache mid-transaction (db + journal, as a kill leaves them): readers see the last commit."""
    import shutil

    src = tmp_path / "live.sqlite"
    meta = {"root": "/r", "parts": ["head"], "expert": "prior"}
    with GroundingCache.open(src, meta=meta) as c:
        c.add_many([CacheEntry(f"{i}.jpg", "ok", 8, 8, {"head": PartBox((0, 0, 4, 4))}) for i in range(5)])
    con = sqlite3.connect(str(src))
    con.execute("PRAGMA cache_size=1")  # spill to the file before commit
    con.execute("BEGIN")
    for i in range(5, 3000):
        con.execute("INSERT INTO entries VALUES (?, ?, 'ok', 8, 8, ?, 0)", (f"{i}.jpg", f"{i}.jpg", "{}" * 50))
    journal = src.with_name(src.name + "-journal")
    assert journal.exists()
    dead = tmp_path / "dead.sqlite"
    shutil.copy(src, dead)
    shutil.copy(journal, dead.with_name(dead.name + "-journal"))
    con.rollback()
    con.close()
    with GroundingCache.open(dead, readonly=True) as c:
        assert len(c) == 5
