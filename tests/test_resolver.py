"""`muva.data.datasets.resolve_source`: a name, a dataset folder, ``synth:PATH`` or a plain image folder → its images.

Also: the grounding, extraction and training users of the resolver agree on the images of
a spec, and every registered dataset has the registry record its consumers read.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from PIL import Image

from _helpers import make_market
from muva.data.datasets import (
    DATASETS,
    STANDARD_DATASETS,
    DatasetError,
    DatasetRecord,
    UnusableDatasetError,
    dataset_record,
    dataset_records,
    open_dataset,
    resolve_source,
)
from test_datasets_small import make_viper


def _resolved(paths) -> list[str]:
    return [str(Path(p).resolve()) for p in paths]


def make_plain_folder(root: Path) -> Path:
    """A folder of images in no dataset layout: a Market name, a MARS name, an unparsable name, a hidden file."""
    (root / "a").mkdir(parents=True)
    (root / "b" / ".hidden").mkdir(parents=True)
    img = Image.new("RGB", (16, 32), (120, 30, 30))
    img.save(root / "a" / "0007_c3s1_000100_00.jpg")
    img.save(root / "a" / "0012C2T0003F001.jpg")
    img.save(root / "b" / "cat.png")
    img.save(root / "b" / ".skip.png")
    img.save(root / "b" / ".hidden" / "0001_c1s1_000001_00.jpg")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def make_synth_domain(folder: Path, name: str = "street") -> Path:
    make_market(folder, ids=2, cams=2)
    (folder / "domain.json").write_text(json.dumps({"name": name}))
    return folder


# ----------------------------------------------------------------------------- what a spec resolves to
def test_registered_name_with_options(tmp_path):
    make_viper(tmp_path)
    src = resolve_source("viper", tmp_path, {"split": 3})
    expected = open_dataset("viper", tmp_path, split=3)
    assert src.kind == "dataset" and src.is_dataset and src.name == "viper" and src.options == {"split": 3}
    assert src.dataset.info["split"] == 3
    assert src.images(["query", "gallery"]) == _resolved(r.path for r in expected.query + expected.gallery)
    assert len(src.images(["query"])) == 316
    rows = src.rows(["query"])
    assert rows[0]["split"] == "query" and rows[0]["dataset"] == "viper" and rows[0]["camid"] == 0
    assert src.describe(["query"]) == {"kind": "dataset", "name": "viper", "root": str(expected.root),
                                       "splits": ["query"], "dataset_options": {"split": 3}}
    # an alias is the same dataset
    assert resolve_source("VIPeR", tmp_path, {"split": 3}).images() == src.images()


def test_dataset_folder(tmp_path):
    market = make_market(tmp_path / "mk", ids=3, cams=2)
    src = resolve_source(str(market))
    assert src.kind == "dataset" and src.name == "mk" and src.root == market.resolve()
    ds = open_dataset(str(market))
    assert src.images(["train"]) == _resolved(r.path for r in ds.train) and len(src.images(["train"])) == 12
    assert len(src.images()) == 12 + 6 + 12  # train + query + gallery, each once
    assert {r.pid for _, r in src.records(["query"])} == {1, 2, 3}
    # a Path works as well as a str
    assert resolve_source(market).images() == src.images()


def test_synth_path(tmp_path):
    domain = make_synth_domain(tmp_path / "domain_0", "street")
    by_prefix = resolve_source(f"synth:{domain}")
    by_path = resolve_source(str(domain))
    assert by_prefix.kind == by_path.kind == "dataset"
    assert by_prefix.name == by_path.name == "synth-street"
    assert by_prefix.dataset.info["synthetic"] is True
    assert by_prefix.images() == by_path.images() and len(by_prefix.images()) == 2 * 2 * (2 + 1 + 2)


def test_plain_image_folder(tmp_path):
    folder = make_plain_folder(tmp_path / "crops")
    src = resolve_source(str(folder))
    assert src.kind == "folder" and not src.is_dataset and src.dataset is None
    assert src.name == "crops" and src.root == folder.resolve()
    assert src.not_dataset  # why it is no dataset: the layout parser's message
    expected = [folder / "a" / "0007_c3s1_000100_00.jpg", folder / "a" / "0012C2T0003F001.jpg", folder / "b" / "cat.png"]
    assert src.images() == _resolved(expected)
    assert src.images(["query"]) == src.images()  # a folder has no splits: every image
    ids = {Path(r.path).name: (r.pid, r.camid) for _, r in src.records()}
    assert ids == {"0007_c3s1_000100_00.jpg": (7, 2), "0012C2T0003F001.jpg": (12, 1), "cat.png": (-1, -1)}
    assert {(r["split"], r["dataset"]) for r in src.rows()} == {("", "")}
    assert src.describe() == {"kind": "folder", "path": str(folder.resolve())}


def test_options_without_a_dataset_are_an_error(tmp_path):
    folder = make_plain_folder(tmp_path / "crops")
    with pytest.raises(DatasetError, match="a dataset given by path accepts only the option 'name'"):
        resolve_source(str(folder), options={"split": 3})
    # even ``name`` (allowed for dataset folders) gets no plain-folder fallback
    with pytest.raises(DatasetError, match="no Market-1501 folders|bounding_box_train|dataset at"):
        resolve_source(str(folder), options={"name": "mine"})


def test_neither_dataset_nor_folder(tmp_path):
    with pytest.raises(DatasetError) as info:
        resolve_source("no-such-dataset", tmp_path)
    text = str(info.value)
    assert "unknown dataset 'no-such-dataset' (and no folder of that name exists" in text and "Registered:" in text
    with pytest.raises(DatasetError, match=r"dataset folder .*absent does not exist"):
        resolve_source(str(tmp_path / "absent"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no images found under .*empty \(read as a dataset folder: .*as a plain "
                                           r"image folder: no image file below it\)"):
        resolve_source(str(tmp_path / "empty"))
    (tmp_path / "one.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="one.jpg is a file; pass a dataset name, a dataset folder or a folder of images"):
        resolve_source(str(tmp_path / "one.jpg"))


def test_unknown_split_is_an_error(tmp_path):
    src = resolve_source(str(make_market(tmp_path / "mk", ids=2, cams=2)))
    with pytest.raises(DatasetError, match="unknown split.*tarin.*choose from train, query, gallery"):
        src.images(["tarin"])


def test_unusable_dataset_raises_or_is_kept(tmp_path):
    market = make_market(tmp_path / "mk", ids=2, cams=2)
    for p in (market / "query").iterdir():
        p.unlink()
    with pytest.raises(UnusableDatasetError, match="query"):
        resolve_source(str(market))
    src = resolve_source(str(market), keep_unusable=True)
    assert src.problem is not None and src.problem.status_of("query")
    assert src.images(["query"]) == [] and len(src.images(["train"])) == 8
    from muva.grounding.run import resolve_images  # grounding takes the images that were read

    assert resolve_images(str(market)).paths == src.images() and len(src.images()) == 8 + 8


# ----------------------------------------------------------------------------- the users agree
def _three_users(spec: str, root, splits):
    from muva.engine.config import DataConfig
    from muva.engine.data import open_spec
    from muva.grounding.run import resolve_images
    from muva.inference.extract import gather_rows

    grounding = resolve_images(spec, root, splits).paths
    rows, _ = gather_rows(spec, root=root, splits=splits)
    ds = open_spec(spec, DataConfig(root=None if root is None else str(root)))
    training = [r.path for s in splits for r in ds.split(s)]
    return grounding, _resolved(rows_path["path"] for rows_path in rows), training


@pytest.mark.parametrize("kind", ["name", "folder", "synth"])
def test_grounding_extraction_and_training_agree(tmp_path, kind):
    if kind == "name":
        make_market(tmp_path / "Market-1501-v15.09.15", ids=2, cams=2)
        spec, root = "market1501", tmp_path
    elif kind == "folder":
        spec, root = str(make_market(tmp_path / "mk", ids=2, cams=2)), None
    else:
        spec, root = f"synth:{make_synth_domain(tmp_path / 'd0')}", None
    splits = ["query", "gallery"]
    grounding, extraction, training = _three_users(spec, root, splits)
    assert grounding == extraction == _resolved(training) == resolve_source(spec, root).images(splits)
    assert len(grounding) == 2 * 2 * (1 + 2)


def test_plain_folder_users(tmp_path):
    """Grounding and extraction take a plain folder's images; training refuses it (no identities to learn)."""
    from muva.engine.config import DataConfig
    from muva.engine.data import open_spec
    from muva.grounding.run import resolve_images
    from muva.inference.extract import folder_rows, gather_rows

    folder = make_plain_folder(tmp_path / "crops")
    rows, src = gather_rows(str(folder))
    assert resolve_images(str(folder)).paths == [r["path"] for r in rows] == [r["path"] for r in folder_rows(folder)]
    assert src == {"kind": "folder", "path": str(folder.resolve())} and len(rows) == 3
    with pytest.raises(DatasetError, match=r"is a plain folder of 3 image\(s\); training and evaluation need a dataset"):
        open_spec(str(folder), DataConfig())
    with pytest.raises(DatasetError, match="cannot read 'nope' as a dataset or image folder: unknown dataset 'nope'"):
        resolve_images("nope", tmp_path)
    with pytest.raises(DatasetError, match="'nope' is neither a registered dataset nor a folder: unknown dataset 'nope'"):
        gather_rows("nope", root=tmp_path)


# ----------------------------------------------------------------------------- registry records
@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_a_complete_record(name):
    record = dataset_record(name)
    assert isinstance(record, DatasetRecord) and record.name == name
    assert record.parser is DATASETS.get(name) and callable(record.parser)
    assert isinstance(record.standard, bool)
    assert isinstance(record.num_splits, int) and record.num_splits >= 1
    params = list(inspect.signature(record.parser).parameters)
    assert params[0] == "root" and record.options == tuple(params[1:])
    if record.num_splits > 1:  # the splits are picked with the option ``split``
        assert "split" in record.options
    assert record.summary, f"{name}'s parser needs a docstring (its first line describes the dataset)"
    for alias in record.aliases:
        assert dataset_record(alias) is record
    assert (name in STANDARD_DATASETS) == record.standard


def test_standard_list_and_fixed_splits_come_from_records():
    from muva.data.splits import SPECS, load_splits

    assert STANDARD_DATASETS == tuple(r.name for r in dataset_records() if r.standard)
    assert {"market1501", "msmt17", "viper", "mars"} <= set(STANDARD_DATASETS)
    assert not {"custom", "cuhk03np", "msmt17-trainval"} & set(STANDARD_DATASETS)
    assert {r.name: r.num_splits for r in dataset_records() if r.num_splits > 1} == {
        "viper": 10, "prid2011": 10, "grid": 10, "ilids": 10}
    for name in SPECS:  # the shipped split files hold as many splits as the record says
        assert len(load_splits(name)["splits"]) == dataset_record(name).num_splits
    with pytest.raises(DatasetError, match="unknown dataset 'vipr'.*Did you mean 'viper'"):
        dataset_record("vipr")


def test_data_check_default_is_the_standard_list(tmp_path):
    from typer.testing import CliRunner

    from muva.cli import app

    res = CliRunner().invoke(app, ["data", "check", "--root", str(tmp_path / "absent")], env={"COLUMNS": "220"})
    assert res.exit_code == 1
    rows = [line.split("│")[1].strip() for line in res.output.splitlines() if line.count("│") > 2]
    assert [r for r in rows if r and r != "dataset"] == list(STANDARD_DATASETS)


def test_cli_refuses_dataset_options_for_a_plain_folder(tmp_path):
    """`muva extract FOLDER -O split=3`: one clean error line, exit 2, no traceback."""
    from test_bad_data_inputs import muva, refused

    folder = make_plain_folder(tmp_path / "crops")
    text = refused(muva("extract", tmp_path / "none.safetensors", folder, "-O", "split=3", "-o", tmp_path / "f"))
    assert text.startswith("error: dataset option 'split' is taken by none of the datasets given") and f"{folder}: name" in text
    assert not (tmp_path / "f").exists()
