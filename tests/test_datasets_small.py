"""VIPeR, PRID2011, GRID and QMUL-iLIDS on fabricated trees of their real sizes, with fixed splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from muva.data import DatasetError, open_dataset
from muva.data import splits as split_mod
from muva.data.datasets import dataset_record
from muva.data.records import SplitStats


from _helpers import stats, touch


# ----------------------------------------------------------------------------- split files
def test_split_files_reproducible_from_script(tmp_path):
    assert split_mod.main(["--out", str(tmp_path)]) == 0
    for name in split_mod.SPECS:
        committed = split_mod.split_path(name).read_text()
        assert (tmp_path / f"{name}.json").read_text() == committed
    assert split_mod.main(["--check"]) == 0


def test_split_check_detects_a_changed_file(tmp_path, capsys):
    split_mod.main(["--out", str(tmp_path)])
    doc = json.loads((tmp_path / "viper.json").read_text())
    doc["splits"][0]["test"][0], doc["splits"][0]["train"][0] = doc["splits"][0]["train"][0], doc["splits"][0]["test"][0]
    (tmp_path / "viper.json").write_text(split_mod.render(doc))
    assert split_mod.main(["--check", "--out", str(tmp_path)]) == 1
    assert "viper.json: DIFFERS" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(split_mod.SPECS))
def test_split_documents_are_well_formed(name):
    doc = split_mod.load_splits(name)
    spec = split_mod.SPECS[name]
    assert doc["seed"] == split_mod.SPLIT_SEED and len(doc["splits"]) == dataset_record(name).num_splits
    everyone = set(split_mod._items(name))
    tests = []
    for s in doc["splits"]:
        test, train = set(s["test"]), set(s["train"])
        assert len(test) == spec["num_test"] and not test & train and test | train == everyone
        tests.append(tuple(sorted(test)))
    assert len(set(tests)) == 10  # ten different splits
    # a different seed gives different splits (the seed matters)
    assert split_mod.generate(name, seed=split_mod.SPLIT_SEED + 1)["splits"][0]["test"] != doc["splits"][0]["test"]


def test_pick_pair_distinct_and_in_range():
    for n in (2, 3, 7):
        for a in range(0, 50, 7):
            for b in range(0, 50, 5):
                q, g = split_mod.pick_pair(a, b, n)
                assert 0 <= q < n and 0 <= g < n and q != g


# ----------------------------------------------------------------------------- VIPeR
def make_viper(root: Path, persons: int = 632) -> Path:
    base = root / "VIPeR"
    for k in range(persons):
        touch(base / "cam_a" / f"{k * 2:03d}_45.bmp")
        touch(base / "cam_b" / f"{k * 2:03d}_90.bmp")
    touch(base / "cam_a" / "Thumbs.db")
    return base


def test_viper_split_sizes_and_pairs(tmp_path):
    make_viper(tmp_path)
    ds = open_dataset("viper", tmp_path)
    assert stats(ds) == {"train": (316, 632, 2), "query": (316, 316, 1), "gallery": (316, 316, 1)}
    assert ds.info == {"split": 0, "num_splits": 10}
    assert [r.pid for r in ds.query] == [r.pid for r in ds.gallery]
    assert all("cam_a" in r.path for r in ds.query) and all("cam_b" in r.path for r in ds.gallery)
    expected = {i + 1 for i in split_mod.load_splits("viper")["splits"][0]["test"]}
    assert {r.pid for r in ds.query} == expected
    other = open_dataset("viper", tmp_path, split=3)
    assert {r.pid for r in other.query} != expected and other.info["split"] == 3


def test_viper_incomplete_copy_and_bad_split(tmp_path):
    make_viper(tmp_path, persons=20)
    with pytest.raises(DatasetError, match="indexes 632 persons but 20 were found"):
        open_dataset("viper", tmp_path)
    make_viper(tmp_path / "full")
    with pytest.raises(DatasetError, match="split 10 does not exist; choose 0..9"):
        open_dataset("viper", tmp_path / "full", split=10)


# ----------------------------------------------------------------------------- PRID2011
def make_prid(root: Path) -> Path:
    base = root / "prid_2011" / "single_shot"
    for i in range(1, 386):
        touch(base / "cam_a" / f"person_{i:04d}.png")
    for i in range(1, 750):
        touch(base / "cam_b" / f"person_{i:04d}.png")
    touch(root / "prid_2011" / "multi_shot" / "cam_a" / "person_0001" / "0001.png")
    return base


def test_prid_split_sizes(tmp_path):
    make_prid(tmp_path)
    ds = open_dataset("prid", tmp_path, split=2)
    assert stats(ds) == {"train": (100, 200, 2), "query": (100, 100, 1), "gallery": (649, 649, 1)}
    test_ids = set(split_mod.load_splits("prid2011")["splits"][2]["test"])
    assert {r.pid for r in ds.query} == test_ids
    gallery_ids = {r.pid for r in ds.gallery}
    assert test_ids < gallery_ids and gallery_ids - test_ids == set(range(201, 750))
    assert not {r.pid for r in ds.train} & gallery_ids


# ----------------------------------------------------------------------------- GRID
def make_grid(root: Path, num_splits: int = 10) -> tuple[Path, list[list[int]]]:
    from scipy.io import savemat

    base = root / "underground_reid"
    for pid in range(1, 251):
        touch(base / "probe" / f"{pid:04d}_{1 + pid % 8}_25004_107_32_106_221.jpeg")
        touch(base / "gallery" / f"{pid:04d}_{1 + (pid + 3) % 8}_25004_108_32_106_221.jpeg")
    for k in range(775):
        touch(base / "gallery" / f"0000_{1 + k % 8}_{30000 + k}_1_1_1_1.jpeg")
    rng = np.random.default_rng(0)
    parts = [sorted(rng.choice(np.arange(1, 251), 125, replace=False).tolist()) for _ in range(num_splits)]
    cells = np.empty((1, num_splits), dtype=object)
    for k, p in enumerate(parts):
        cells[0, k] = np.asarray(p, dtype=np.float64).reshape(1, -1)  # MATLAB stores doubles
    savemat(str(base / "features_and_partitions.mat"), {"trainIdxAll": cells, "featuresAll": np.zeros((2, 2))})
    return base, parts


def test_grid_splits_from_partition_file(tmp_path):
    base, parts = make_grid(tmp_path)
    ds = open_dataset("grid", tmp_path, split=4)
    assert stats(ds)["query"][:2] == (125, 125)
    assert stats(ds)["gallery"][:2] == (126, 900)  # 125 identities + distractor 0
    assert stats(ds)["train"][:2] == (125, 250)
    assert {r.pid for r in ds.train} == set(parts[4])
    assert {r.pid for r in ds.query} == set(range(1, 251)) - set(parts[4])
    assert sum(r.pid == 0 for r in ds.gallery) == 775
    assert ds.info["num_splits"] == 10
    assert open_dataset("grid", tmp_path, split=5).query != ds.query


def test_grid_partition_errors(tmp_path):
    from scipy.io import savemat

    base, _ = make_grid(tmp_path, num_splits=3)
    with pytest.raises(DatasetError, match="split 3 does not exist.*holds 3"):
        open_dataset("grid", tmp_path, split=3)
    savemat(str(base / "features_and_partitions.mat"), {"somethingElse": np.zeros(3)})
    with pytest.raises(DatasetError, match="lacks 'trainIdxAll'"):
        open_dataset("grid", tmp_path)
    (base / "features_and_partitions.mat").unlink()
    with pytest.raises(DatasetError, match="features_and_partitions.mat"):
        open_dataset("grid", tmp_path)


# ----------------------------------------------------------------------------- iLIDS
def make_ilids(root: Path) -> Path:
    base = root / "QMUL-iLIDS" / "i-LIDS_Pedestrian" / "Persons"
    counts = [2, 6] + [4] * 117  # 119 persons, 476 images
    for pid, n in enumerate(counts, start=1):
        for k in range(n):
            touch(base / f"{pid:04d}{k + 1:03d}.jpg")
    return base


def test_ilids_split(tmp_path):
    make_ilids(tmp_path)
    ds = open_dataset("ilids", tmp_path, split=1)
    st = stats(ds)
    assert st["query"] == (60, 60, 1) and st["gallery"] == (60, 60, 1) and st["train"][0] == 59
    assert st["train"][1] + 120 <= 476
    q = {r.pid: r.path for r in ds.query}
    g = {r.pid: r.path for r in ds.gallery}
    assert set(q) == set(g) and all(q[p] != g[p] for p in q)
    doc = split_mod.load_splits("ilids")["splits"][1]
    assert {pid - 1 for pid in q} == set(doc["test"])  # positions = pid - 1 here
    assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
    # reproducible: same split → same images
    assert [r.path for r in open_dataset("ilids", tmp_path, split=1).query] == [r.path for r in ds.query]


def test_split_stats_of_empty():
    assert SplitStats.of([]) == SplitStats(0, 0, 0)
