"""MSMT17, CUHK02, CUHK-SYSU, MARS, custom and synthetic datasets on fabricated trees; real mini_mars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from muva.data import DatasetError, open_dataset
from muva.data.records import UNKNOWN_CAMERA


from _helpers import stats, touch


# ----------------------------------------------------------------------------- MSMT17
def make_msmt(root: Path, version: str = "V1") -> Path:
    base = root / "msmt17" / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    train = ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_0.jpg 0",
             "0001/0001_000_15_0303noon_0001_1.jpg 1"]
    val = ["0002/0002_000_03_0303noon_0002_0.jpg 2"]
    query = ["0000/0000_000_02_0303morning_0001_0.jpg 0"]
    gallery = ["0000/0000_001_07_0303morning_0002_0.jpg 0", "0001/0001_002_09_0303morning_0003_0.jpg 1", ""]
    for name, lines, folder in (("train", train, train_dir), ("val", val, train_dir), ("query", query, test_dir), ("gallery", gallery, test_dir)):
        (base / f"list_{name}.txt").parent.mkdir(parents=True, exist_ok=True)
        (base / f"list_{name}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            if line:
                touch(base / folder / line.split()[0])
    return base


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_layouts_and_train_split(tmp_path, version):
    base = make_msmt(tmp_path, version)
    ds = open_dataset("msmt17", tmp_path)
    assert ds.info == {"version": version, "train_split": "train"}
    assert stats(ds)["train"] == (2, 3, 3)
    # list labels start at 0; identity 0 means "distractor" in muva, so ids are label + 1
    assert sorted({r.pid for r in ds.train}) == [1, 2]
    assert sorted(r.camid for r in ds.train) == [0, 4, 14]
    assert all(Path(r.path).exists() for r in ds.train + ds.query + ds.gallery)
    assert str(base) in ds.train[0].path
    tv = open_dataset("msmt17", tmp_path, train_split="train+val")
    assert tv.info["train_split"] == "train+val" and stats(tv)["train"] == (3, 4, 4)
    assert open_dataset("msmt17-trainval", tmp_path).info["train_split"] == "train+val"
    with pytest.raises(DatasetError, match="train_split 'val' is unknown"):
        open_dataset("msmt17", tmp_path, train_split="val")


def test_msmt17_errors(tmp_path):
    base = make_msmt(tmp_path)
    (base / "list_query.txt").write_text("0000/0000_000_02_0303morning_0001_0.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt:1: expected"):
        open_dataset("msmt17", tmp_path)
    import shutil

    shutil.rmtree(base / "test")
    with pytest.raises(DatasetError, match=r"not the image folders: expected train/ \+ test/ \(V1\) or mask_train_v2/"):
        open_dataset("msmt17", tmp_path)
    empty = tmp_path / "empty"
    (empty / "MSMT17_V1" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError) as exc:
        open_dataset("msmt17", empty)
    assert "list_train.txt" in str(exc.value) and "found in" in str(exc.value)


# ----------------------------------------------------------------------------- CUHK02, CUHK-SYSU
def test_cuhk02_pairs(tmp_path):
    base = tmp_path / "cuhk02" / "Dataset"
    for k in range(1, 6):
        for cam in ("cam1", "cam2"):
            for prefix in ("001", "002"):
                touch(base / f"P{k}" / cam / f"{prefix}_{1 if cam == 'cam1' else 3}.png")
    touch(base / "P1" / "cam1" / "001_2.png")
    touch(base / "P1" / "readme.txt")
    ds = open_dataset("cuhk02", tmp_path)
    # the same prefix in two pairs is two people: 5 pairs × 2 prefixes = 10 identities
    assert stats(ds) == {"train": (10, 21, 10), "query": (0, 0, 0), "gallery": (0, 0, 0)}
    assert {r.camid for r in ds.train if "/P3/" in r.path} == {4, 5}
    assert min(r.pid for r in ds.train) == 1
    (base / "P4" / "cam2").rename(base / "P4" / "camB")
    with pytest.raises(DatasetError, match="P4/cam2"):
        open_dataset("cuhk02", tmp_path)


def test_cuhksysu_crops(tmp_path):
    base = tmp_path / "CUHK-SYSU" / "cropped_images"
    for name in ("p11422_s16929_1.jpg", "p11422_s16930_2.jpg", "p7_s16929_1.jpg", "s5.jpg"):
        touch(base / name)
    ds = open_dataset("cuhksysu", tmp_path)
    assert stats(ds)["train"] == (2, 3, 2)
    assert {r.pid for r in ds.train} == {7, 11422}
    assert [Path(p).name for p in ds.info["skipped"]] == ["s5.jpg"]


# ----------------------------------------------------------------------------- MARS
def make_mars(root: Path) -> Path:
    base = root / "MARS"
    # train: identity 1, camera 1, tracklet 1 (3 frames) and camera 2 tracklet 1 (2 frames)
    for name in ("0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0001C1T0001F003.jpg", "0001C2T0001F001.jpg", "0001C2T0001F002.jpg"):
        touch(base / "bbox_train" / "0001" / name)
    # test: identity 2 in two cameras, a distractor tracklet (0000) and a junk tracklet (00-1)
    for f in range(1, 6):
        touch(base / "bbox_test" / "0002" / f"0002C1T0001F{f:03d}.jpg")
    for f in range(1, 4):
        touch(base / "bbox_test" / "0002" / f"0002C3T0002F{f:03d}.jpg")
    touch(base / "bbox_test" / "0000" / "0000C2T0001F001.jpg")
    touch(base / "bbox_test" / "00-1" / "00-1C4T0001F001.jpg")
    touch(base / "bbox_test" / "0002" / "Thumbs.db")
    return base


def test_mars_without_info(tmp_path):
    make_mars(tmp_path)
    ds = open_dataset("mars", tmp_path)
    assert stats(ds)["train"] == (1, 5, 2)
    # one query per real test tracklet: its middle frame
    assert sorted(Path(r.path).name for r in ds.query) == ["0002C1T0001F003.jpg", "0002C3T0002F002.jpg"]
    assert stats(ds)["gallery"] == (2, 7, 3)  # 8 - 2 query frames of identity 2, + the distractor
    assert all(r.pid != -1 for r in ds.gallery)
    tracks = {r.trackid for r in ds.train + ds.query + ds.gallery}
    assert len(tracks) == 5 and {r.trackid for r in ds.train} == {0, 1}
    assert "no info/" in ds.info["query_mode"]
    with pytest.raises(DatasetError, match="use_info=True"):
        open_dataset("mars", tmp_path, use_info=True)


def test_mars_official_info(tmp_path):
    from scipy.io import savemat

    base = make_mars(tmp_path)
    info = base / "info"
    info.mkdir()
    train_names = ["0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0001C1T0001F003.jpg", "0001C2T0001F001.jpg", "0001C2T0001F002.jpg"]
    test_names = [f"0002C1T0001F{f:03d}.jpg" for f in range(1, 6)] + [f"0002C3T0002F{f:03d}.jpg" for f in range(1, 4)] + ["0000C2T0001F001.jpg", "00-1C4T0001F001.jpg"]
    (info / "train_name.txt").write_text("\n".join(train_names) + "\n")
    (info / "test_name.txt").write_text("\n".join(test_names) + "\n")
    savemat(str(info / "tracks_train_info.mat"), {"track_train_info": np.array([[1, 3, 1, 1], [4, 5, 1, 2]], dtype=float)})
    savemat(str(info / "tracks_test_info.mat"), {"track_test_info": np.array([[1, 5, 2, 1], [6, 8, 2, 3], [9, 9, 0, 2], [10, 10, -1, 4]], dtype=float)})
    savemat(str(info / "query_IDX.mat"), {"query_IDX": np.array([[2]], dtype=float)})  # only the 2nd test tracklet
    ds = open_dataset("mars", tmp_path)
    assert "official" in ds.info["query_mode"]
    assert [Path(r.path).name for r in ds.query] == ["0002C3T0002F002.jpg"]
    assert stats(ds)["gallery"] == (2, 8, 3)
    assert all(Path(r.path).exists() for r in ds.train + ds.query + ds.gallery)
    assert open_dataset("mars", tmp_path, use_info=False).info["query_mode"].startswith("no info/")


@pytest.mark.real_data
def test_mini_mars_real_images(mini_mars):
    ds = open_dataset("mars", mini_mars)
    everything = ds.train + ds.query + ds.gallery
    assert len(everything) == 5572
    assert len({r.pid for r in everything}) == 32
    assert len({r.camid for r in everything}) == 6
    assert stats(ds)["train"] == (16, 1719, 6)
    assert len(ds.query) == 64 and len(ds.gallery) == 3853 - 64  # one query frame per test tracklet
    assert len({r.trackid for r in everything}) == 96
    assert open_dataset(str(mini_mars)).stats() == ds.stats()  # opened by path too


# ----------------------------------------------------------------------------- custom
def test_custom_pattern_with_splits_and_cameras(tmp_path):
    base = tmp_path / "mydata"
    for rel in ("train/alice/cam1_001.png", "train/alice/cam2_002.png", "train/bob/cam1_003.png",
                "query/carol/cam1_010.png", "gallery/carol/cam2_011.png", "gallery/dave/cam2_012.png",
                "train/notes/readme.png", "train/alice/meta.txt"):
        touch(base / rel)
    ds = open_dataset("custom", path=base, pattern=r"^(?P<pid>[a-z]+)/cam(?P<camid>\d+)_")
    assert stats(ds) == {"train": (2, 3, 2), "query": (1, 1, 1), "gallery": (2, 2, 1)}
    names = ds.info["identity_names"]
    assert sorted(names.values()) == ["alice", "bob", "carol", "dave"]
    assert names[str(ds.query[0].pid)] == "carol"
    assert [Path(p).name for p in ds.info["skipped"]] == ["readme.png"]


def test_custom_pattern_without_cameras_flat_folder(tmp_path):
    for name in ("12_a.jpg", "12_b.jpg", "7_a.jpg", "-1_x.jpg", "other.jpg"):
        touch(tmp_path / "flat" / name)
    ds = open_dataset("custom", root=tmp_path / "flat", pattern=r"^(?P<pid>-?\d+)_")
    assert stats(ds)["train"] == (2, 3, 0)  # junk -1 dropped, 'other.jpg' skipped
    assert {r.camid for r in ds.train} == {UNKNOWN_CAMERA}
    assert ds.info["has_cameras"] is False
    assert {r.pid for r in ds.train} == {7, 12}


def test_custom_csv(tmp_path):
    touch(tmp_path / "img" / "a.jpg")
    (tmp_path / "list.csv").write_text(
        "path,identity,camera,split\nimg/a.jpg,5,north,train\nimg/b.jpg,5,south,train\n"
        "img/c.jpg,9,north,query\nimg/d.jpg,9,south,gallery\nimg/e.jpg,0,south,gallery\n"
    )
    ds = open_dataset("custom", csv=tmp_path / "list.csv")
    assert stats(ds) == {"train": (1, 2, 2), "query": (1, 1, 1), "gallery": (2, 2, 1)}
    assert ds.train[0].path == str(tmp_path / "img" / "a.jpg")
    assert {r.camid for r in ds.train} == {0, 1}
    (tmp_path / "bare.csv").write_text("x/1.jpg,p1\nx/2.jpg,p2\n")
    bare = open_dataset("custom", csv=tmp_path / "bare.csv")
    assert stats(bare)["train"] == (2, 2, 0) and bare.info["has_cameras"] is False
    (tmp_path / "bad.csv").write_text("x/1.jpg,3,1,validation\n")
    with pytest.raises(DatasetError, match="bad.csv:1: split 'validation'"):
        open_dataset("custom", csv=tmp_path / "bad.csv")


def test_custom_errors(tmp_path):
    touch(tmp_path / "d" / "x.jpg")
    with pytest.raises(DatasetError, match="give pattern="):
        open_dataset("custom", path=tmp_path / "d")
    with pytest.raises(DatasetError, match=r"needs a named group \(\?P<pid>"):
        open_dataset("custom", path=tmp_path / "d", pattern=r"(\d+)")
    with pytest.raises(DatasetError, match="matched no image.*x.jpg"):
        open_dataset("custom", path=tmp_path / "d", pattern=r"^(?P<pid>\d+)_")


# ----------------------------------------------------------------------------- synthetic domains by path
def make_domain(folder: Path, name: str, first_pid: int) -> Path:
    for k in range(2):
        touch(folder / "bounding_box_train" / f"{first_pid + k:04d}_c1s1_000001_00.jpg")
        touch(folder / "bounding_box_train" / f"{first_pid + k:04d}_c2s1_000002_00.jpg")
    touch(folder / "query" / f"{first_pid + 5:04d}_c1s1_000003_00.jpg")
    touch(folder / "bounding_box_test" / f"{first_pid + 5:04d}_c2s1_000004_00.jpg")
    touch(folder / "bounding_box_test" / "0000_c1s1_000005_00.jpg")
    (folder / "domain.json").write_text(json.dumps({"name": name, "background": "street"}))
    (folder / "parts.jsonl").write_text("")
    return folder


def test_synthetic_domain_by_path(tmp_path):
    d0 = make_domain(tmp_path / "bench" / "domain_0", "domain_0", 1)
    make_domain(tmp_path / "bench" / "domain_1", "domain_1", 101)
    (tmp_path / "bench" / "synth.json").write_text(json.dumps({"domains": [{"name": "domain_0", "path": "domain_0"}, {"name": "domain_1", "path": "domain_1"}]}))
    a = open_dataset(str(d0))
    b = open_dataset(f"synth:{d0}")
    c = open_dataset(d0)
    assert a.name == b.name == c.name == "synth-domain_0"
    assert a.info["synthetic"] is True and a.info["parts_jsonl"].endswith("parts.jsonl")
    assert stats(a) == {"train": (2, 4, 2), "query": (1, 1, 1), "gallery": (2, 2, 2)}
    with pytest.raises(DatasetError, match="several domains.*domain_0, domain_1"):
        open_dataset(str(tmp_path / "bench"))
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "nowhere"))
    assert open_dataset(str(d0), name="mine").name == "mine"
    with pytest.raises(DatasetError, match="accepts only the option 'name'"):
        open_dataset(str(d0), split=2)


def test_generated_synthetic_benchmark_opens(tmp_path):
    synth = pytest.importorskip("muva.data.synth")
    cfg = synth.SynthConfig(num_domains=2, ids_per_domain=4, test_ids_per_domain=4)
    synth.generate(cfg, tmp_path / "bench")
    names = set()
    for d in sorted((tmp_path / "bench").glob("domain_*")):
        ds = open_dataset(str(d))
        assert ds.info["synthetic"] is True and len(ds.train) > 0 and len(ds.query) > 0
        assert ds.num_train_pids == 4
        names.add(ds.name)
    assert len(names) == 2
