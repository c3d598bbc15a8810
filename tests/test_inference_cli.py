"""`muva extract` → `muva search build/query` round trip on a tiny Market-layout folder."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _helpers import make_market, tiny_checkpoint
from muva.cli import app
from muva.utils.featurefiles import load_features

pytest.importorskip("faiss")
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    tmp = tmp_path_factory.mktemp("cli")
    ckpt = tiny_checkpoint(tmp / "tiny.safetensors")
    data = make_market(tmp / "market")
    (data / "bounding_box_test" / "0009_c1s1_000000_00.jpg").write_bytes(b"broken file")
    return tmp, ckpt, data


def _text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_extract_resume_search_round_trip(setup):
    tmp, ckpt, data = setup
    out = tmp / "feats"
    r = _ok(runner.invoke(app, ["extract", str(ckpt), str(data), "-o", str(out), "--batch-size", "4", "--shard-size", "5"]))
    assert "1 unreadable" in _text(r)
    fs = load_features(out)
    assert len(fs) == 4 * 2 + 4 * 2 * 2  # query + gallery (the broken image skipped)
    assert set(fs.splits) == {"query", "gallery"}
    assert fs.pids[0] == 1 and fs.camids[0] == 0
    with open(out / "failed.csv", newline="") as fh:
        failed = list(csv.DictReader(fh))
    assert len(failed) == 1 and failed[0]["path"].endswith("0009_c1s1_000000_00.jpg")
    manifest = json.loads((out / "features.json").read_text())
    assert manifest["meta"]["source"]["kind"] == "dataset" and manifest["meta"]["extractor"]["dim"] == fs.dim

    # Resume: drop the last shard from the manifest as if the run had been killed, rerun.
    manifest["shards"] = manifest["shards"][:2]
    manifest["num_rows"] = sum(s["rows"] for s in manifest["shards"])
    manifest["complete"] = False
    (out / "features.json").write_text(json.dumps(manifest))
    kept = manifest["num_rows"]
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for k, s in enumerate(manifest["shards"]):
        with open(out / s["metadata"], "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows[5 * k : 5 * k + 5])
    r = _ok(runner.invoke(app, ["extract", str(ckpt), str(data), "-o", str(out), "--batch-size", "4", "--shard-size", "5"]))
    assert f"{len(fs) - kept} new rows" in _text(r)
    again = load_features(out)
    order = np.argsort(again.paths)
    ref = np.argsort(fs.paths)
    np.testing.assert_allclose(again.features[order], fs.features[ref], atol=1e-5)

    # Index the gallery split and query it with the gallery's own features: each ranks itself first.
    index = tmp / "index"
    r = _ok(runner.invoke(app, ["search", "build", str(out), "-o", str(index)]))
    assert "bytes/vector" in _text(r)
    info = json.loads((index / "index.json").read_text())
    assert info["ntotal"] == 16 and info.get("split") == "gallery"
    res_file = tmp / "res.csv"
    _ok(runner.invoke(app, ["search", "query", str(index), "--features", str(out), "--split", "gallery", "-k", "3", "-o", str(res_file)]))
    with open(res_file, newline="") as fh:
        res = list(csv.DictReader(fh))
    firsts = [r for r in res if r["rank"] == "1"]
    assert len(firsts) == 16
    assert all(r["query"] == r["gallery"] and float(r["distance"]) < 1e-4 for r in firsts)

    # Query with image files through the model: same answer as the stored features.
    gal = sorted((data / "bounding_box_test").glob("000[1-4]*.jpg"))[:3]
    res_json = tmp / "res.json"
    r = _ok(runner.invoke(app, ["search", "query", str(index), *map(str, gal), "--checkpoint", str(ckpt), "-k", "2", "-o", str(res_json)]))
    got = json.loads(res_json.read_text())
    tops = [g for g in got if g["rank"] == 1]
    assert [t["gallery"] for t in tops] == [str(p) for p in gal]
    assert gal[0].name in _text(r)

    # Evaluate the extraction folder directly: its query rows against its gallery rows.
    from muva.evaluation import evaluate

    q, g = again.split("query"), again.split("gallery")
    want = evaluate(q.features, g.features, q_pids=q.pids, g_pids=g.pids, q_camids=q.camids, g_camids=g.camids)
    res_dir = tmp / "eval"
    r = _ok(runner.invoke(app, ["evaluate-features", str(out), str(out), "--quiet", "-o", str(res_dir)]))
    got = json.loads((res_dir / "results.json").read_text())
    assert got["rows"][0]["average"]["mAP"] == pytest.approx(want.mAP)
    assert got["rows"][0]["average"]["rank1"] == pytest.approx(float(want.cmc[0]))
    import muva.utils.featurefiles as features_module  # the reader evaluate-features uses

    reads = []
    real_load = features_module.load_features
    with pytest.MonkeyPatch.context() as mp:  # one folder given for both sides is read once
        mp.setattr(features_module, "load_features", lambda *a, **k: reads.append(a) or real_load(*a, **k))
        _ok(runner.invoke(app, ["evaluate-features", str(out), str(out), "--quiet"]))
    assert len(reads) == 1
    bad = runner.invoke(app, ["evaluate-features", str(out), str(out), "--gallery-split", "train", "--quiet"])
    assert bad.exit_code == 2 and "no rows of split 'train'" in _text(bad)


def test_extract_plain_folder_and_errors(setup, tmp_path):
    tmp, ckpt, data = setup
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 20, 3), 40 * i, np.uint8)).save(folder / f"person{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "f"
    _ok(runner.invoke(app, ["extract", str(ckpt), str(tmp_path / "imgs"), "-o", str(out)]))
    fs = load_features(out)
    assert fs.names == ["person0.png", "person1.png", "person2.png"] and fs.pids.tolist() == [-1, -1, -1]
    r = runner.invoke(app, ["extract", str(ckpt), str(tmp_path / "imgs"), "-o", str(out), "--flip"])
    assert r.exit_code == 2 and "other settings (flip: False → True)" in _text(r)
    _ok(runner.invoke(app, ["extract", str(ckpt), str(tmp_path / "imgs"), "-o", str(out), "--flip", "--overwrite"]))
    assert load_features(out).meta["extractor"]["flip"] is True
    r = runner.invoke(app, ["extract", str(ckpt), "no-such-dataset", "-o", str(out)])
    assert r.exit_code == 2 and "neither a registered dataset nor a folder" in _text(r)
    r = runner.invoke(app, ["extract", str(tmp_path / "missing.safetensors"), str(data), "-o", str(out)])
    assert r.exit_code == 2 and "does not exist" in _text(r)
    r = runner.invoke(app, ["search", "query", str(tmp_path), "--features", str(out)])
    assert r.exit_code == 2 and "not an index folder" in _text(r)


@pytest.mark.real_data
def test_real_images_extract_and_self_search(setup, mini_mars, tmp_path):
    """mini MARS crops: dataset parsing, extraction with worker decoding, self-retrieval."""
    from muva.inference import FeatureExtractor, GalleryIndex
    from muva.inference.extract import gather_rows, parse_identity

    tmp, ckpt, data = setup
    rows, src = gather_rows(str(mini_mars))
    assert src["kind"] == "dataset" and {r["split"] for r in rows} == {"query", "gallery"}
    rows = rows[:: max(1, len(rows) // 24)][:24]
    for r in rows:  # MARS names carry identity and camera
        assert parse_identity(r["path"]) == (r["pid"], r["camid"])
    fx = FeatureExtractor(ckpt, batch_size=8, num_workers=1)
    res = fx.extract_files([r["path"] for r in rows], progress=False)
    assert not res.failed and res.features.shape == (24, fx.dim)
    index = GalleryIndex.build(res.features, res.paths)
    top = index.search(res.features, k=1)
    assert [n[0] for n in top.names] == res.paths


def _muva(*args, cwd):
    """Run the real console entry point: exit code, stderr on one line, raw stderr."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=300)
    return r.returncode, " ".join(r.stderr.split()), r.stderr


def test_bad_command_line_values_are_one_error_line(setup, tmp_path):
    """Flag values the commands cannot use: exit 2, one ``error:`` line with the message, no traceback."""
    from muva.inference import GalleryIndex

    tmp, ckpt, data = setup
    rng = np.random.default_rng(0)
    g = rng.normal(size=(5, 4)).astype(np.float32)
    GalleryIndex.build(g / np.linalg.norm(g, axis=1, keepdims=True), [f"g{i}.jpg" for i in range(5)]).save(tmp_path / "idx")
    cases = [
        (["extract", ckpt, data, "-o", tmp_path / "f", "--backend", "tensorrt"],
         "error: backend must be 'torch', 'onnx' or 'auto', not 'tensorrt'"),
        (["search", "query", tmp_path / "idx"], "error: give query images (with --checkpoint) or --features"),
        (["search", "query", tmp_path / "idx", "some.jpg"],
         "error: image queries need --checkpoint (the model that extracted the gallery)"),
        (["search", "query", tmp_path / "idx", tmp_path / "gone.jpg", "--checkpoint", ckpt],
         f"error: {tmp_path / 'gone.jpg'} does not exist"),
        (["search", "build", tmp_path / "nofeats", "-o", tmp_path / "i2"], f"error: feature file not found: {tmp_path / 'nofeats'}"),
        (["export", ckpt, "-o", tmp_path / "m.tflite", "--format", "tflite"], "error: unknown export format 'tflite'; supported: onnx"),
    ]
    for args, message in cases:
        code, err, raw = _muva(*args, cwd=tmp_path)
        assert code == 2 and "Traceback" not in raw, (args, raw)
        assert err.count("error:") == 1 and message in err, (args, err)
