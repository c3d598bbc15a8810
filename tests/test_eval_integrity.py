"""Evaluation never stands in another image for an unreadable one: `muva eval` == extract + evaluate-features."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import make_market, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def muva(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "muva", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def broken_target(tmp_path_factory):
    """A Market-layout target whose gallery holds one empty .jpg per query identity, in another camera."""
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    tmp = tmp_path_factory.mktemp("integrity")
    model = tiny_checkpoint(tmp / "run" / "model.safetensors")
    data = make_market(tmp / "market", ids=8, cams=2)
    empty = [data / "bounding_box_test" / f"{pid:04d}_c3s1_000099_00.jpg" for pid in range(1, 9)]
    for path in empty:
        path.write_bytes(b"")
    return tmp, model, data, empty


@pytest.fixture(scope="module")
def extract_path_metrics(broken_target):
    """The same target through `muva extract` + `muva evaluate-features` (which lists failed files)."""
    tmp, model, data, _ = broken_target
    feats = tmp / "feats"
    r = muva("extract", str(model), str(data), "-o", str(feats), "--batch-size", "16")
    assert r.returncode == 0, r.stderr
    r = muva("evaluate-features", str(feats), str(feats), "--out", str(tmp / "ef"), "--quiet")
    assert r.returncode == 0, r.stderr
    return _metrics(tmp / "ef" / "results.json")


def _metrics(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return next(iter(doc["rows"][0]["results"].values()))


@pytest.mark.parametrize("scan", ["true", "false"], ids=["scanned-up-front", "found-while-decoding"])
def test_eval_skips_unreadable_gallery_images_and_matches_the_extract_path(broken_target, extract_path_metrics, scan):
    tmp, model, data, empty = broken_target
    out = tmp / f"eval-{scan}"
    r = muva("eval", str(model), "-t", str(data), "-o", str(out), f"data.check_images={scan}", "data.num_workers=0",
             "device=cpu")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    got = _metrics(out / "eval_results.json")
    ref = extract_path_metrics
    assert got["num_gallery"] == ref["num_gallery"] == 8 * 2 * 2  # the 8 empty files are not in the gallery
    assert got["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert got["rank1"] == pytest.approx(ref["rank1"], abs=1e-6)
    skipped = got["info"]["skipped_images"]
    assert sorted(Path(s["path"]).name for s in skipped) == sorted(p.name for p in empty)
    assert {s["split"] for s in skipped} == {"gallery"}
    assert "8 unreadable image(s) left out" in " ".join(r.stderr.split())


def test_eval_with_on_bad_image_raise_fails_cleanly(broken_target):
    tmp, model, data, _ = broken_target
    r = muva("eval", str(model), "-t", str(data), "-o", str(tmp / "eval-raise"), "data.on_bad_image=raise",
             "device=cpu")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unreadable query/gallery image" in " ".join(r.stderr.split())


def test_evaluation_dataset_never_substitutes(tmp_path):
    """The loader's same-identity fallback is for training only; evaluation items come back invalid."""
    from muva.data.loader import ReIDImageDataset, collate
    from muva.data.records import ImageRecord

    data = make_market(tmp_path / "m", ids=2, cams=2)
    good = sorted((data / "bounding_box_test").glob("0001_*.jpg"))
    bad = data / "bounding_box_test" / "0001_c2s1_000099_00.jpg"
    bad.write_bytes(b"not an image")
    records = [ImageRecord(str(p), 1, 0) for p in good] + [ImageRecord(str(bad), 1, 1)]
    tf = lambda im, masks, seed: (torch.as_tensor(np.asarray(im)[:2, :2].astype("float32")), masks)  # noqa: E731
    train = ReIDImageDataset(records, tf)
    evald = ReIDImageDataset(records, tf, substitute=False)
    assert train[len(records) - 1]["valid"] is True  # replaced by another image of identity 1
    item = evald[len(records) - 1]
    assert item["valid"] is False and float(item["image"].abs().sum()) == 0.0
    batch = collate([evald[i] for i in range(len(records))])
    assert batch["valid"].tolist() == [True] * len(good) + [False]
    assert str(bad) in evald.bad_files
