"""Unusable data is refused with one message and a non-zero exit code, never a traceback.

Covers: a split path that is a file, empty splits, splits whose names do not parse,
incomplete copies of the small targets, unknown names, a missing default data root, and
the one ``--dataset-option`` / ``-O KEY=VALUE`` flag of every command that opens a dataset.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from muva.data.datasets import DatasetError, open_dataset, parse_dataset_options
from muva.data.datasets.options import options_for_datasets
from muva.data.records import UnusableDatasetError

from _helpers import make_market, touch

VENV_BIN = str(Path(sys.executable).parent)


def muva(*args, cwd: Path | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m muva ARGS`` as a user would (wide terminal so that lines do not wrap)."""
    env = {k: v for k, v in os.environ.items() if k != "MUVA_DATA"}
    env.update(COLUMNS="250", PATH=VENV_BIN + os.pathsep + env.get("PATH", ""), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def refused(res: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert a clean refusal (exit ``code``, no traceback); return stderr and stdout joined."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    return " ".join((res.stderr + "\n" + res.stdout).split())


def table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """``{(dataset, split): [identities, images, cameras, status]}`` of the `muva data check` table."""
    out, current = {}, ""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 6 or not cells[1]:
            continue
        current = cells[0] or current
        out[(current, cells[1])] = cells[2:]
    return out


def market_layout(folder: Path, train=("0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"),
                  query=("0002_c1s1_000003_00.jpg",), gallery=("0002_c2s1_000004_00.jpg",)) -> Path:
    for sub, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            touch(folder / sub / name)
    return folder


# ----------------------------------------------------------------------------- 1. a split path that is a file
def test_split_path_that_is_a_file(tmp_path):
    folder = market_layout(tmp_path / "Market-1501-v15.09.15", gallery=())
    (folder / "bounding_box_test").rmdir()
    (folder / "bounding_box_test").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"bounding_box_test is a file, but a folder .* is expected there"):
        open_dataset("market1501", tmp_path)
    text = refused(muva("data", "summary", folder))
    assert f"{folder / 'bounding_box_test'} is a file, but a folder (of images or sub-folders) is expected there" in text
    assert "must hold bounding_box_train/, query/, bounding_box_test/" in text
    res = muva("data", "check", "market1501", "--root", tmp_path)
    assert table_rows(res.stdout)[("market1501", "—")][-1] == "missing"
    assert "bounding_box_test is a file" in refused(res, 1)


# ----------------------------------------------------------------------------- 2. empty and unparsable splits
def test_empty_gallery_and_query_are_problems(tmp_path):
    no_gallery = market_layout(tmp_path / "no_gallery", gallery=())
    no_query = market_layout(tmp_path / "no_query", query=())
    with pytest.raises(UnusableDatasetError, match=r"the gallery split is empty: .*no_gallery/bounding_box_test/ holds no image") as exc:
        open_dataset(str(no_gallery))
    assert [p.split for p in exc.value.problems] == ["gallery"] and len(exc.value.dataset.train) == 2
    res = muva("data", "check", no_gallery, no_query)
    text = refused(res, 1)
    rows = table_rows(res.stdout)
    assert rows[(f"{no_gallery} (no_gallery)", "gallery")] == ["0 / —", "0 / —", "0 / —", "empty"]
    assert rows[(f"{no_gallery} (no_gallery)", "train")] == ["1 / —", "2 / —", "2 / —", "no reference"]
    assert rows[(f"{no_query} (no_query)", "query")][-1] == "empty"
    assert f"problem: no_gallery: the gallery split is empty: {no_gallery / 'bounding_box_test'}/ holds no image" in text
    assert f"problem: no_query: the query split is empty: {no_query / 'query'}/ holds no image" in text


def test_train_names_that_do_not_parse(tmp_path):
    folder = market_layout(tmp_path / "renamed", train=("person_a.jpg", "person_b.jpg"))
    with pytest.raises(UnusableDatasetError) as exc:
        open_dataset(str(folder))
    msg = str(exc.value)
    assert "the train split is empty because no file name in" in msg and "(2 image(s), e.g. 'person_a.jpg')" in msg
    assert "expected Market-1501 names PPPP_cC" in msg and "0002_c1s1_000451_03.jpg" in msg
    res = muva("data", "check", folder)
    text = refused(res, 1)
    assert table_rows(res.stdout)[(f"{folder} (renamed)", "train")][-1] == "names unparsed"
    assert "problem: renamed: the train split is empty because no file name in" in text


def test_training_and_evaluation_builders_refuse_them(tmp_path):
    from muva.data.multisource import combine
    from muva.engine.config import DataConfig
    from muva.engine.data import build_sources, build_targets

    renamed = market_layout(tmp_path / "renamed", train=("person_a.jpg",))
    no_gallery = market_layout(tmp_path / "no_gallery", gallery=())
    with pytest.raises(DatasetError, match="the train split is empty because no file name in .* parses"):
        build_sources(DataConfig(sources=[str(renamed)]), check_images=False)
    with pytest.raises(DatasetError, match="the gallery split is empty"):
        build_targets(DataConfig(targets=[str(no_gallery)]))
    with pytest.raises(DatasetError, match="no file name in"):
        combine([str(renamed)])
    only_distractors = market_layout(tmp_path / "d", train=("0000_c1s1_000001_00.jpg", "-1_c1s1_000002_00.jpg"))
    with pytest.raises(DatasetError, match=r"the 2 image\(s\) in .* are all junk \(-1\) or distractors \(0\)"):
        open_dataset(str(only_distractors))


# ----------------------------------------------------------------------------- 3. empty layouts in summary and ground run
def test_summary_and_ground_refuse_an_empty_layout(tmp_path):
    empty = market_layout(tmp_path / "empty", train=(), query=(), gallery=())
    text = refused(muva("data", "summary", empty))
    assert "empty: the train split is empty" in text and "the query split is empty" in text and "the gallery split is empty" in text
    text = refused(muva("ground", "run", empty, "-e", "prior", "--no-progress", "-o", tmp_path / "c.sqlite"))
    assert f"nothing to ground in {empty}: empty: the train split is empty" in text
    assert not (tmp_path / "c.sqlite").exists()
    (tmp_path / "nothing").mkdir()
    text = refused(muva("ground", "run", tmp_path / "nothing", "-e", "prior", "--no-progress", "-o", tmp_path / "c.sqlite"))
    assert f"cannot read '{tmp_path / 'nothing'}' as a dataset or image folder" in text and "no image file below it" in text


# ----------------------------------------------------------------------------- 4. incomplete small targets
def test_incomplete_viper_shows_found_counts(tmp_path):
    from test_datasets_small import make_viper

    make_viper(tmp_path, persons=20)
    with pytest.raises(UnusableDatasetError, match="indexes 632 persons but 20 were found") as exc:
        open_dataset("viper", tmp_path)
    partial = exc.value.dataset
    assert len(partial.train) + len(partial.query) + len(partial.gallery) == 40
    res = muva("data", "check", "viper", "--root", tmp_path)
    text = refused(res, 1)
    rows = table_rows(res.stdout)
    n_train = len(partial.train) // 2
    assert rows[("viper", "train")] == [f"{n_train} ≠ 316", f"{2 * n_train} ≠ 632", "2 / 2", "incomplete"]
    assert rows[("viper", "query")] == [f"{20 - n_train} ≠ 316", f"{20 - n_train} ≠ 316", "1 / 1", "incomplete"]
    assert rows[("viper", "gallery")][-1] == "incomplete"
    assert "—" not in "".join(rows[("viper", "train")])
    assert "problem: VIPeR: the split file indexes 632 persons but 20 were found" in text


def test_incomplete_prid_and_ilids(tmp_path):
    prid = tmp_path / "prid_2011" / "single_shot"
    for i in range(1, 51):
        touch(prid / "cam_a" / f"person_{i:04d}.png")
        touch(prid / "cam_b" / f"person_{i:04d}.png")
    ilids = tmp_path / "QMUL-iLIDS" / "Persons"
    for pid in range(1, 31):
        for k in (1, 2):
            touch(ilids / f"{pid:04d}{k:03d}.jpg")
    res = muva("data", "check", "prid2011", "ilids", "--root", tmp_path)
    text = refused(res, 1)
    rows = table_rows(res.stdout)
    for name in ("prid2011", "ilids"):
        assert [rows[(name, s)][-1] for s in ("train", "query", "gallery")] == ["incomplete"] * 3
    found_prid = sum(int(rows[("prid2011", s)][1].split()[0]) for s in ("train", "query", "gallery"))
    assert found_prid == 100  # every image of the 50 persons is shown somewhere
    assert "≠ 649" in rows[("prid2011", "gallery")][1]
    assert "PRID2011: the split file indexes 200 persons but 50 were found" in text
    assert "QMUL-iLIDS: the split file indexes 119 persons but 30 were found" in text


# ----------------------------------------------------------------------------- 5. unknown names, missing default root
def test_unknown_name_suggests_each_name_once(tmp_path):
    text = refused(muva("data", "summary", "market1510", cwd=tmp_path))
    assert re.search(r"Did you mean 'market1501'\? Registered:", text), text
    assert text.count("'market1501'") == 1
    with pytest.raises(DatasetError, match=r"Did you mean 'dukemtmcreid'"):
        open_dataset("dukemtmcried", tmp_path)


def test_missing_default_root_is_named_with_its_absolute_path(tmp_path):
    text = refused(muva("data", "summary", "market1501", cwd=tmp_path))
    assert (f"data root ./data does not exist ({tmp_path / 'data'}, the default when neither --root nor $MUVA_DATA is set); "
            "set --root DIR or $MUVA_DATA") in text
    res = muva("data", "check", "market1501", "viper", cwd=tmp_path)
    assert f"problem: data root ./data does not exist ({tmp_path / 'data'}" in refused(res, 1)
    text = refused(muva("data", "summary", "market1501", cwd=tmp_path, env_extra={"MUVA_DATA": str(tmp_path / "gone")}))
    assert f"data root {tmp_path / 'gone'} does not exist (from $MUVA_DATA)" in text


# ----------------------------------------------------------------------------- 6. one dataset-option flag
def test_parse_dataset_options_types_and_scopes():
    opts = parse_dataset_options(["split=3", "use_info=false", "msmt.train_split=train+val",
                                  r"pattern=^(?P<pid>[a-z]+)/c(?P<camid>\d)", "split_file=null", "name=run 1"])
    assert opts == {"*": {"split": 3, "use_info": False, "pattern": r"^(?P<pid>[a-z]+)/c(?P<camid>\d)",
                          "split_file": None, "name": "run 1"},
                    "msmt17": {"train_split": "train+val"}}
    for bad, match in (("split", "is not KEY=VALUE"), ("=3", "is not KEY=VALUE"), ("nosuch.split=1", "unknown dataset 'nosuch'")):
        with pytest.raises(DatasetError, match=match):
            parse_dataset_options([bad])


def test_options_go_to_the_datasets_that_take_them():
    parsed = parse_dataset_options(["split=3", "cuhk03.variant=labeled"])
    assert options_for_datasets(["viper", "cuhk03np", "market1501"], parsed) == [{"split": 3}, {"variant": "labeled"}, {}]
    with pytest.raises(DatasetError, match="dataset 'market1501' has no option 'split'; accepted: none"):
        options_for_datasets(["market1501"], parse_dataset_options(["split=3"]))
    with pytest.raises(DatasetError, match="names dataset 'cuhk03np', which is not among the datasets given"):
        options_for_datasets(["viper"], parsed)
    with pytest.raises(DatasetError, match="dataset 'viper' has no option 'varient'; accepted: split, split_file"):
        options_for_datasets(["viper", "market1501"], parse_dataset_options(["viper.varient=1"]))


def test_data_commands_take_dash_capital_o(tmp_path):
    from test_datasets_small import make_viper

    make_viper(tmp_path)
    for flag in ("-O", "--dataset-option", "--option"):
        res = muva("data", "summary", "viper", "--root", tmp_path, flag, "split=3")
        assert res.returncode == 0, res.stderr
        assert "split: 3" in res.stdout
    res = muva("data", "check", "viper", "--root", tmp_path, "-O", "viper.split=4")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "split=4" in res.stdout
    assert "No such option: -o" in refused(muva("data", "check", "viper", "--root", tmp_path, "-o", "split=3"))
    assert "has no option 'varient'" in refused(muva("data", "summary", "viper", "--root", tmp_path, "-O", "varient=x"))


def test_ground_run_takes_dataset_options(tmp_path):
    make_market(tmp_path / "imgs", ids=2, cams=2, train_per_cam=1)
    pattern = r"pattern=^(?P<pid>\d+)_c(?P<camid>\d+)"
    out = tmp_path / "custom.sqlite"
    res = muva("ground", "run", "custom", "-O", f"path={tmp_path / 'imgs'}", "-O", pattern, "-e", "prior", "--no-progress", "-o", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "custom: 16 image(s) in scope" in " ".join(res.stdout.split())  # 4 train + 4 query + 8 gallery
    assert out.is_file()
    text = refused(muva("ground", "run", "custom", "-O", "pattern=^x", "-O", "colour=red", "-e", "prior", "-o", out))
    assert "dataset 'custom' has no option 'colour'; accepted: path, pattern, csv, name" in text


def test_extract_takes_dataset_options(tmp_path):
    from test_datasets_small import make_viper

    from muva.data.datasets import dataset_options_for
    from muva.inference.extract import gather_rows

    make_viper(tmp_path)
    options = dataset_options_for(["viper"], ["split=3"])[0]
    rows, src = gather_rows("viper", root=tmp_path, splits=["query", "gallery"], options=options)
    expected = open_dataset("viper", tmp_path, split=3)
    assert [r["path"] for r in rows] == [r.path for r in expected.query + expected.gallery]
    assert src["dataset_options"] == {"split": 3} and src["name"] == "viper"
    text = refused(muva("extract", tmp_path / "none.safetensors", "viper", "--root", tmp_path, "-O", "varient=1", "-o", tmp_path / "f"))
    assert "dataset 'viper' has no option 'varient'; accepted: split, split_file" in text
