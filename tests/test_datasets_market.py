"""Market-1501-layout parsers (Market, Duke, CUHK03-NP) on fabricated trees; `muva data summary`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from muva.cli import app
from muva.data import DatasetError, open_dataset
from muva.data.datasets import load_dataset
from muva.data.datasets.market1501 import parse_market_filename

runner = CliRunner()


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# train: 2 real identities (0002 ×2 cams, 0007), plus a distractor and a junk file that must be dropped.
MARKET_TRAIN = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000101_01.jpg",
                "0000_c1s1_000001_00.jpg", "-1_c1s1_000002_00.jpg"]
MARKET_QUERY = ["0003_c1s1_000051_00.jpg", "0003_c2s1_000052_00.jpg", "0008_c4s2_000100_00.jpg"]
MARKET_GALLERY = ["0003_c3s1_000051_01.jpg", "0003_c1s1_000060_02.jpg", "0008_c5s3_000101_01.jpg",
                  "0000_c1s1_000002_00.jpg", "0000_c6s1_000003_00.jpg", "-1_c2s1_000004_00.jpg"]
# Files that are not dataset images: non-image files, a hidden macOS fork, a stray sub-folder.
NOISE = ["Thumbs.db", "readme.txt", "._0002_c1s1_000451_03.jpg", "extra/0009_c1s1_000001_00.jpg"]


def make_market(folder: Path, misplaced: bool = True) -> Path:
    """A Market-1501-layout tree with junk, distractors, non-image and misplaced files."""
    for split, names in (("bounding_box_train", MARKET_TRAIN), ("query", MARKET_QUERY), ("bounding_box_test", MARKET_GALLERY)):
        for name in names:
            touch(folder / split / name)
        for name in NOISE:
            touch(folder / split / name)
    if misplaced:
        touch(folder / "bounding_box_train" / "notes.jpg")  # an image whose name does not parse
        touch(folder / "0004_c1s1_000001_00.jpg")  # an image lying beside the split folders
        touch(folder / "gt_bbox" / "0001_c1s1_000001_00.jpg")  # a folder muva does not read
    return folder


def test_parse_market_filename():
    assert parse_market_filename("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_market_filename("-1_c6s2_000001_00.jpg") == (-1, 5)
    assert parse_market_filename("/a/b/0000_c3s1_1.jpg") == (0, 2)
    with pytest.raises(DatasetError, match="PPPP_cC"):
        parse_market_filename("person.jpg")


def test_market_counts_junk_distractors_noise(tmp_path):
    folder = make_market(tmp_path / "Market-1501-v15.09.15")
    ds = load_dataset("market1501", tmp_path)
    assert ds.name == "market1501" and ds.root == folder
    st = ds.stats()
    # train: 0002 ×2 + 0007; distractor 0000 and junk -1 dropped
    assert (st["train"].num_pids, st["train"].num_images, st["train"].num_cams) == (2, 3, 3)
    assert sorted(r.pid for r in ds.train) == [2, 2, 7]
    assert (st["query"].num_pids, st["query"].num_images, st["query"].num_cams) == (2, 3, 3)
    # gallery keeps the two distractors (identity 0) and drops the junk file
    assert (st["gallery"].num_pids, st["gallery"].num_images) == (3, 5)
    assert sorted(r.pid for r in ds.gallery) == [0, 0, 3, 3, 8]
    assert all(r.pid != -1 for r in ds.train + ds.query + ds.gallery)
    cams = {Path(r.path).name: r.camid for r in ds.gallery}
    assert cams["0000_c6s1_000003_00.jpg"] == 5 and cams["0003_c1s1_000060_02.jpg"] == 0
    # the unparseable image is reported, never counted; the hidden fork and sub-folder are ignored
    assert [Path(p).name for p in ds.info["skipped"]] == ["notes.jpg"]
    paths = [r.path for r in ds.train + ds.query + ds.gallery]
    assert not any("/extra/" in p or "/._" in p or p.endswith((".db", ".txt")) for p in paths)
    assert all(Path(p).is_absolute() or Path(p).exists() for p in paths)
    assert [r.path for r in ds.gallery] == sorted(r.path for r in ds.gallery)  # deterministic order


@pytest.mark.parametrize("nesting", ["", "Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15", "Market-1501/Market-1501"])
def test_market_accepted_nestings(tmp_path, nesting):
    folder = make_market(tmp_path / nesting if nesting else tmp_path, misplaced=False)
    ds = open_dataset("market", tmp_path)  # alias
    assert ds.root == folder
    assert ds.stats()["train"].num_images == 3


def test_market_wrong_layout_lists_expected_and_found(tmp_path):
    inner = tmp_path / "Market-1501-v15.09.15"
    touch(inner / "bounding_box_train" / "0002_c1s1_000451_03.jpg")
    touch(inner / "query" / "0003_c1s1_000051_00.jpg")
    (tmp_path / "other_stuff").mkdir()
    with pytest.raises(DatasetError) as exc:
        load_dataset("market1501", tmp_path)
    msg = str(exc.value)
    assert "bounding_box_train/, query/, bounding_box_test/" in msg
    assert f"Closest match {inner} lacks bounding_box_test/" in msg
    assert "found in" in msg and "query/" in msg
    assert "\n" not in msg  # one message


def test_market_nothing_there_names_what_was_found(tmp_path):
    touch(tmp_path / "images" / "a.jpg")
    touch(tmp_path / "labels.csv")
    with pytest.raises(DatasetError) as exc:
        load_dataset("market1501", tmp_path)
    msg = str(exc.value)
    assert msg.startswith("Market-1501 not found: expected bounding_box_train/, query/, bounding_box_test/")
    assert "Market-1501-v15.09.15/" in msg
    assert f"found in {tmp_path}: images/, labels.csv" in msg


def test_missing_data_root_is_explained(tmp_path):
    with pytest.raises(DatasetError, match=r"data root .*nope does not exist \(given as --root\); set --root DIR or \$MUVA_DATA"):
        load_dataset("market1501", tmp_path / "nope")


def test_data_root_from_environment(tmp_path, monkeypatch):
    make_market(tmp_path / "market1501", misplaced=False)
    monkeypatch.setenv("MUVA_DATA", str(tmp_path))
    assert open_dataset("market1501").stats()["query"].num_images == 3


def test_duke_layout(tmp_path):
    base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for name in ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0005_c8_f0000001.jpg"]:
        touch(base / "bounding_box_train" / name)
    touch(base / "query" / "0011_c1_f0000100.jpg")
    for name in ["0011_c2_f0000200.jpg", "0012_c7_f0000300.jpg", "CONTRIBUTING.md"]:
        touch(base / "bounding_box_test" / name)
    ds = open_dataset("dukemtmcreid", tmp_path)
    st = ds.stats()
    assert (st["train"].num_pids, st["train"].num_images, st["train"].num_cams) == (2, 3, 3)
    assert (st["gallery"].num_pids, st["gallery"].num_images) == (2, 2)
    assert {r.camid for r in ds.train} == {1, 4, 7}


def _make_cuhk03np(root: Path) -> None:
    for variant, n_train in (("labeled", 3), ("detected", 2)):
        base = root / "cuhk03-np" / variant
        for i in range(n_train):
            touch(base / "bounding_box_train" / f"0001_c{1 + i % 2}_{i}.png")
        touch(base / "query" / "0100_c1_1.png")
        touch(base / "bounding_box_test" / "0100_c2_1.png")


def test_cuhk03np_variants(tmp_path):
    _make_cuhk03np(tmp_path)
    det = open_dataset("cuhk03np", tmp_path)
    lab = open_dataset("cuhk03np", tmp_path, variant="labeled")
    assert det.info["variant"] == "detected" and len(det.train) == 2
    assert lab.info["variant"] == "labeled" and len(lab.train) == 3
    assert len(open_dataset("cuhk03np-labeled", tmp_path).train) == 3
    assert len(open_dataset("cuhk03np", tmp_path / "cuhk03-np" / "labeled", variant="labeled").train) == 3
    with pytest.raises(DatasetError, match="variant 'both' is unknown"):
        open_dataset("cuhk03np", tmp_path, variant="both")
    with pytest.raises(DatasetError, match="no option 'varient'.*accepted: variant"):
        open_dataset("cuhk03np", tmp_path, varient="labeled")


def test_cuhk03np_missing_variant_error(tmp_path):
    base = tmp_path / "cuhk03-np" / "labeled"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (base / split).mkdir(parents=True)
    with pytest.raises(DatasetError) as exc:
        open_dataset("cuhk03np", tmp_path)  # default variant: detected, absent
    msg = str(exc.value)
    assert "CUHK03-NP (detected) not found" in msg and "detected/" in msg
    assert "found in" in msg and "labeled/" in msg


def test_unknown_dataset_name_suggests(tmp_path):
    with pytest.raises(DatasetError, match="Did you mean.*market1501"):
        open_dataset("market1510", tmp_path)


def test_data_summary_command(tmp_path):
    make_market(tmp_path / "Market-1501-v15.09.15")
    result = runner.invoke(app, ["data", "summary", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:5]] for ln in result.output.splitlines() if ln.count("│") >= 5}
    assert lines["train"] == ["2", "3", "3"]
    assert lines["query"] == ["2", "3", "3"]
    assert lines["gallery"] == ["3", "5", "4"]
    assert "1 image file(s) skipped" in result.output


def test_data_summary_by_name_and_root(tmp_path):
    make_market(tmp_path / "market1501", misplaced=False)
    result = runner.invoke(app, ["data", "summary", "market1501", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "market1501" in result.output


def test_data_summary_wrong_folder_exits_with_message(tmp_path):
    (tmp_path / "query").mkdir()
    result = runner.invoke(app, ["data", "summary", str(tmp_path)])
    assert result.exit_code == 2
    assert "bounding_box_train/" in result.output and "found in" in result.output
