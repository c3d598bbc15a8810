"""Every dataset is found at each accepted nesting under the data root (minimal fabricated trees)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from muva.data import DatasetError, open_dataset
from muva.data.datasets import image_sets, market1501, market_style, mars, msmt17, small_targets


from _helpers import touch


def tiny_split_file(folder: Path, test, train, picks=None) -> Path:
    entry = {"test": test, "train": train}
    if picks:
        entry["picks"] = picks
    file = folder / "my_splits.json"  # a stray non-image file beside the dataset, ignored by the parser
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"num_persons": len(test) + len(train), "splits": [entry]}))
    return file


def build_market_like(folder: Path) -> dict:
    touch(folder / "bounding_box_train" / "0001_c1_f0000001.jpg")
    touch(folder / "query" / "0002_c1_f0000002.jpg")
    touch(folder / "bounding_box_test" / "0002_c2_f0000003.jpg")
    return {}


def build_msmt(folder: Path) -> dict:
    for name, rel, sub in (("train", "0000/0000_000_01_0303morning_0001_0.jpg", "train"),
                           ("query", "0000/0000_000_02_0303morning_0002_0.jpg", "test"),
                           ("gallery", "0000/0000_001_03_0303morning_0003_0.jpg", "test")):
        touch(folder / sub / rel)
        (folder / f"list_{name}.txt").write_text(f"{rel} 0\n")
    return {}


def build_cuhk02(folder: Path) -> dict:
    for k in range(1, 6):
        touch(folder / f"P{k}" / "cam1" / "001_1.png")
        touch(folder / f"P{k}" / "cam2" / "001_3.png")
    return {}


def build_sysu(folder: Path) -> dict:
    touch(folder / "cropped_images" / "p1_s1_1.jpg")
    return {}


def build_viper(folder: Path) -> dict:
    for k in range(2):
        touch(folder / "cam_a" / f"{k:03d}_45.bmp")
        touch(folder / "cam_b" / f"{k:03d}_90.bmp")
    return {"split_file": tiny_split_file(folder, [0], [1])}


def build_prid(folder: Path) -> dict:
    for k in (1, 2):
        touch(folder / "cam_a" / f"person_{k:04d}.png")
        touch(folder / "cam_b" / f"person_{k:04d}.png")
    return {"split_file": tiny_split_file(folder, [1], [2])}


def build_grid(folder: Path) -> dict:
    from scipy.io import savemat

    for pid in (1, 2):
        touch(folder / "probe" / f"{pid:04d}_1_1_1_1_1_1.jpeg")
        touch(folder / "gallery" / f"{pid:04d}_2_1_1_1_1_1.jpeg")
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.array([[1.0]])
    folder.mkdir(parents=True, exist_ok=True)
    savemat(str(folder / "features_and_partitions.mat"), {"trainIdxAll": cells})
    return {}


def build_ilids(folder: Path) -> dict:
    for pid in (1, 2):
        for k in (1, 2):
            touch(folder / "Persons" / f"{pid:04d}{k:03d}.jpg")
    return {"split_file": tiny_split_file(folder, [0], [1], {"0": [0, 0]})}


def build_mars(folder: Path) -> dict:
    touch(folder / "bbox_train" / "0001" / "0001C1T0001F001.jpg")
    touch(folder / "bbox_test" / "0002" / "0002C1T0001F001.jpg")
    touch(folder / "bbox_test" / "0002" / "0002C2T0001F001.jpg")
    touch(folder / "bbox_test" / "0002" / "0002C2T0001F002.jpg")  # a gallery frame beside the queries
    return {}


def build_cuhk03(folder: Path) -> dict:
    return build_market_like(folder)


CASES = {
    "market1501": (build_market_like, market1501.MARKET_NESTINGS),
    "dukemtmcreid": (build_market_like, market_style.DUKE_NESTINGS),
    "cuhk03np": (build_cuhk03, market_style._cuhk03_nestings("detected")),
    "msmt17": (build_msmt, msmt17._NESTINGS),
    "cuhk02": (build_cuhk02, image_sets.CUHK02_NESTINGS),
    "cuhksysu": (build_sysu, image_sets.CUHKSYSU_NESTINGS),
    "viper": (build_viper, small_targets.VIPER_NESTINGS),
    "prid2011": (build_prid, small_targets.PRID_NESTINGS),
    "grid": (build_grid, small_targets.GRID_NESTINGS),
    "ilids": (build_ilids, small_targets.ILIDS_NESTINGS),
    "mars": (build_mars, mars.MARS_NESTINGS),
}


def _picked(nestings: tuple[str, ...]) -> list[str]:
    """Every nesting of the fewest levels, plus the first and last deeper ones."""
    depth = min(n.count("/") for n in nestings)
    shallow = [n for n in nestings if n.count("/") == depth]
    deep = [n for n in nestings if n.count("/") > depth]
    return shallow + deep[:1] + deep[-1:]


PARAMS = [(name, nest) for name, (_, nests) in CASES.items() for nest in _picked(nests)]


@pytest.mark.parametrize("name,nesting", PARAMS, ids=[f"{n}:{s or '.'}" for n, s in PARAMS])
def test_found_at_nesting(tmp_path, name, nesting):
    build, _ = CASES[name]
    folder = tmp_path / nesting if nesting else tmp_path
    options = build(folder)
    ds = open_dataset(name, tmp_path, **options)
    assert Path(ds.root) == folder
    assert len(ds.train) >= 1
    assert len(ds.train) + len(ds.query) + len(ds.gallery) >= 2 or name == "cuhksysu"


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_place_error_names_expected_and_found(tmp_path, name):
    build, _ = CASES[name]
    build(tmp_path / "somewhere" / "else" / "deep")
    (tmp_path / "unrelated.txt").write_text("")
    with pytest.raises(DatasetError) as exc:
        open_dataset(name, tmp_path)
    msg = str(exc.value)
    assert "not found: expected" in msg
    assert "somewhere/" in msg and "unrelated.txt" in msg  # what is there instead
