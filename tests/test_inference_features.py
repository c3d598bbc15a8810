"""Feature folder format: writing, resuming, failed images, single-file features."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from muva.utils.featurefiles import FeatureFileError, FeatureSet, FeatureWriter, load_features, read_manifest


def _rows(n, start=0):
    return [{"path": f"/d/{i:04d}_c{i % 3 + 1}.jpg", "pid": i // 2, "camid": i % 3, "split": "gallery" if i % 4 else "query", "dataset": "toy"}
            for i in range(start, start + n)]


def _feats(n, d=8, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_round_trip_and_documented_layout(tmp_path):
    rows, feats = _rows(23), _feats(23)
    w = FeatureWriter(tmp_path / "f", dim=8, shard_size=10, meta={"note": "x"})
    w.add(rows[:7], feats[:7])
    w.add(rows[7:], feats[7:])
    w.add_failed("/d/bad.jpg", "OSError: truncated")
    w.close()
    files = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert files == ["failed.csv", "features-00000.safetensors", "features-00001.safetensors", "features-00002.safetensors",
                     "features.json", "metadata.csv"]
    manifest = read_manifest(tmp_path / "f")
    assert manifest["complete"] and manifest["num_rows"] == 23 and [s["rows"] for s in manifest["shards"]] == [10, 10, 3]
    assert manifest["meta"]["note"] == "x" and manifest["num_failed"] == 1
    with open(tmp_path / "f" / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    assert list(meta[0]) == ["row", "path", "pid", "camid", "split", "dataset"]
    assert [int(r["row"]) for r in meta] == list(range(23))
    fs = load_features(tmp_path / "f")
    np.testing.assert_array_equal(fs.features, feats)
    assert fs.paths == [r["path"] for r in rows]
    assert fs.pids.tolist() == [r["pid"] for r in rows] and fs.camids.tolist() == [r["camid"] for r in rows]
    q = fs.split("query")
    assert len(q) == 6 and all(s == "query" for s in q.splits)
    with pytest.raises(FeatureFileError, match="no rows of split 'train'"):
        fs.split("train")


def test_resume_after_interruption(tmp_path):
    rows, feats = _rows(25), _feats(25)
    out = tmp_path / "f"
    w = FeatureWriter(out, dim=8, shard_size=10)
    w.add(rows[:14], feats[:14])  # one full shard flushed, 4 rows still buffered
    w.add_failed("/d/bad.jpg", "boom")
    w.checkpoint()
    del w  # "killed": never closed
    # A stray shard file that never reached the manifest must be ignored and removed.
    (out / "features-00001.safetensors").write_bytes(b"half written")
    with pytest.raises(FeatureFileError, match="unfinished extraction"):
        load_features(out)
    partial = load_features(out, allow_incomplete=True)
    assert len(partial) == 10
    w2 = FeatureWriter(out, dim=8, shard_size=10)
    assert w2.done_paths == {r["path"] for r in rows[:10]} | {"/d/bad.jpg"}
    todo = [i for i, r in enumerate(rows) if r["path"] not in w2.done_paths]
    w2.add([rows[i] for i in todo], feats[todo])
    w2.close()
    fs = load_features(out)
    np.testing.assert_array_equal(fs.features, feats)
    assert fs.paths == [r["path"] for r in rows]
    # Extending a completed folder keeps its rows.
    w3 = FeatureWriter(out, dim=8, shard_size=10)
    more = _rows(3, start=100)
    w3.add(more, _feats(3, seed=5))
    w3.close()
    fs = load_features(out)
    assert len(fs) == 28 and fs.paths[-1] == more[-1]["path"]
    np.testing.assert_array_equal(fs.features[:25], feats)


def test_dimension_mismatch_and_overwrite(tmp_path):
    w = FeatureWriter(tmp_path, dim=8)
    w.add(_rows(2), _feats(2))
    w.close()
    with pytest.raises(FeatureFileError, match="8-d features but this model gives 4-d"):
        FeatureWriter(tmp_path, dim=4)
    w = FeatureWriter(tmp_path, dim=4, resume=False)
    w.close()
    assert load_features(tmp_path).dim == 4 and len(load_features(tmp_path)) == 0
    with pytest.raises(FeatureFileError, match=r"got \(2, 3\) features"):
        FeatureWriter(tmp_path / "x", dim=4).add(_rows(2), np.zeros((2, 3)))


def test_single_file_features(tmp_path):
    feats = _feats(4)
    np.savez(tmp_path / "q.npz", features=feats)
    fs = load_features(tmp_path / "q.npz")
    assert fs.paths == ["0", "1", "2", "3"] and fs.pids.tolist() == [-1] * 4
    from safetensors.numpy import save_file

    save_file({"features": feats}, str(tmp_path / "g.safetensors"))
    (tmp_path / "g.csv").write_text("path,pid,camid\na.jpg,1,0\nb.jpg,2,1\nc.jpg,3,0\nd.jpg,0,2\n")
    fs = load_features(tmp_path / "g.safetensors")
    assert fs.names == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"] and fs.pids.tolist() == [1, 2, 3, 0]
    np.savez(tmp_path / "bad.npz", feats=feats)
    with pytest.raises(FeatureFileError, match="no 'features' array"):
        load_features(tmp_path / "bad.npz")
    with pytest.raises(FeatureFileError, match="not a feature folder"):
        load_features(tmp_path)


def test_featureset_save(tmp_path):
    fs = FeatureSet(_feats(3), ["a", "b", "c"], pids=[1, 1, 2], camids=[0, 1, 0], splits=["query", "gallery", "gallery"])
    fs.save(tmp_path / "s")
    back = load_features(tmp_path / "s")
    np.testing.assert_array_equal(back.features, fs.features)
    assert back.splits == fs.splits and json.loads((tmp_path / "s" / "features.json").read_text())["complete"]
