"""`muva data check`: found vs official numbers, mismatch marking, exit status, --verify-images."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from muva.cli import app
from muva.data.datasets.official import OFFICIAL, official_stats
from muva.data.records import ReIDDataset

runner = CliRunner()
WIDE = {"COLUMNS": "220"}


def check(*args):
    return runner.invoke(app, ["data", "check", *args], env=WIDE)


def rows(output: str) -> list[list[str]]:
    """Table rows (cells stripped); wrapped continuation lines (empty split cell) are left out."""
    table = [[c.strip() for c in ln.split("│")[1:-1]] for ln in output.splitlines() if ln.count("│") >= 7]
    return [r for r in table if r[1]]


def test_official_table_matches_reference():
    assert OFFICIAL["market1501"]["gallery"] == (751, 15913, 6)
    assert OFFICIAL["msmt17/train+val"]["train"][1] == 32621 and OFFICIAL["msmt17/train"]["train"][1] == 30248
    assert OFFICIAL["cuhk03np/detected"]["gallery"][1] == 5332 and OFFICIAL["cuhk03np/labeled"]["gallery"][1] == 5328
    assert official_stats(ReIDDataset("msmt17", Path("."), info={"train_split": "train+val"}))["train"][1] == 32621
    assert official_stats(ReIDDataset("market1501", Path("."), info={"path": "/x"})) is None  # opened by path


def test_check_full_size_targets_ok(tmp_path):
    from test_datasets_small import make_grid, make_prid, make_viper

    make_viper(tmp_path)
    make_prid(tmp_path)
    make_grid(tmp_path)
    result = check("viper", "prid2011", "grid", "--root", str(tmp_path), "-O", "split=3")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert [r[1] for r in table] == ["train", "query", "gallery"] * 3
    assert all(r[-1] == "ok" for r in table)
    assert table[5][3] == "649 / 649" and table[4][3] == "100 / 100"  # PRID gallery, query images
    assert "split=3" in result.output


def test_check_marks_mismatch_and_exits_1(tmp_path):
    from test_datasets_market import make_market

    make_market(tmp_path / "Market-1501-v15.09.15")
    result = check("market1501", "--root", str(tmp_path))
    assert result.exit_code == 1
    table = rows(result.output)
    assert table[0][:3] == ["market1501", "train", "2 ≠ 751"]
    assert table[0][4] == "3 ≠ 6" and table[0][-1] == "MISMATCH"
    assert "problem: market1501 train" in result.output
    assert "1 image file(s) skipped" in result.output and "notes.jpg" in result.output


def test_check_missing_dataset_exits_1(tmp_path):
    from test_datasets_small import make_viper

    make_viper(tmp_path)
    result = check("viper", "dukemtmcreid", "--root", str(tmp_path))
    assert result.exit_code == 1
    table = rows(result.output)
    assert table[-1][0] == "dukemtmcreid" and table[-1][-1] == "missing"
    assert all(r[-1] == "ok" for r in table[:3])
    assert "DukeMTMC-reID not found" in result.output


def test_check_missing_root_exits_1(tmp_path):
    result = check("--root", str(tmp_path / "absent"))
    assert result.exit_code == 1
    assert sum(r[-1] == "missing" for r in rows(result.output)) == 12 and "does not exist" in result.output


def _jpeg(path: Path, color=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (16, 32), color).save(buf, "JPEG")
    path.write_bytes(buf.getvalue())


def _domain(folder: Path, broken: bool) -> Path:
    _jpeg(folder / "bounding_box_train" / "0001_c1s1_000001_00.jpg")
    _jpeg(folder / "bounding_box_train" / "0001_c2s1_000002_00.jpg")
    _jpeg(folder / "query" / "0002_c1s1_000003_00.jpg")
    _jpeg(folder / "bounding_box_test" / "0002_c2s1_000004_00.jpg")
    if broken:
        (folder / "bounding_box_test" / "0003_c1s1_000005_00.jpg").write_bytes(b"")
        good = (folder / "query" / "0002_c1s1_000003_00.jpg").read_bytes()
        (folder / "bounding_box_test" / "0004_c2s1_000006_00.jpg").write_bytes(good[: len(good) // 3])
        (folder / "bounding_box_test" / "0005_c2s1_000007_00.jpg").write_bytes(b"not a jpeg at all")
    return folder


def test_verify_images_lists_bad_files_without_stopping(tmp_path):
    folder = _domain(tmp_path / "mine", broken=True)
    result = check(str(folder), "--verify-images", "--workers", "2")
    assert result.exit_code == 1
    assert rows(result.output)[0][-1] == "no reference"
    assert "3 unreadable or empty image(s)" in result.output
    assert "0003_c1s1_000005_00.jpg: empty file" in result.output
    assert "0004_c2s1_000006_00.jpg: unreadable" in result.output
    assert "0005_c2s1_000007_00.jpg: unreadable" in result.output


def test_verify_images_all_good(tmp_path):
    folder = _domain(tmp_path / "mine", broken=False)
    result = check(str(folder), "--verify-images")
    assert result.exit_code == 0, result.output
    assert "every image decodes" in result.output
    assert check(str(folder)).exit_code == 0  # no reference numbers → nothing to mismatch


def test_verify_function_reports_missing_file(tmp_path):
    from muva.data.images import find_bad_images

    _jpeg(tmp_path / "a.jpg")
    bad = find_bad_images([str(tmp_path / "a.jpg"), str(tmp_path / "gone.jpg"), str(tmp_path / "a.jpg")], workers=2)
    assert bad == [(str(tmp_path / "gone.jpg"), "file not found")]


def test_training_scan_uses_the_same_checker(tmp_path):
    from muva.data.loader import scan_images
    from muva.data.records import ImageRecord

    good = tmp_path / "good.jpg"
    _jpeg(good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    bad = scan_images([ImageRecord(str(p), 1) for p in (good, empty, junk, tmp_path / "gone.jpg")], workers=2)
    assert set(bad) == {str(empty), str(junk), str(tmp_path / "gone.jpg")}
    assert bad[str(empty)] == "empty file" and bad[str(tmp_path / "gone.jpg")] == "file not found"
    assert bad[str(junk)].startswith("unreadable (")
