"""The one feature reader: single files (.npz / .pt / .safetensors) and what evaluate-features makes of them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from muva.evaluation import EvaluationError, evaluate
from muva.evaluation.io import load_query_gallery, save_features
from muva.utils.featurefiles import FeatureFileError, load_features


def _toy(n=12, d=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n // 3), 3)
    x = rng.normal(size=(n // 3, d))[ids] + 0.3 * rng.normal(size=(n, d))
    return x.astype(np.float32), ids, np.arange(n) % 2


def _cli(*args, cwd):
    env = {**os.environ, "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "muva", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    return r.returncode, " ".join(r.stderr.split()), r.stderr


def test_npz_with_identities_reads_into_a_feature_set(tmp_path):
    x, ids, cams = _toy()
    save_features(tmp_path / "a.npz", x.astype(np.float16), ids, cams, images=[f"img{i}.jpg" for i in range(12)])
    fs = load_features(tmp_path / "a.npz")
    assert fs.features.dtype == np.float32 and fs.features.shape == (12, 6)
    np.testing.assert_allclose(fs.features, x.astype(np.float16).astype(np.float32))
    assert fs.pids.tolist() == ids.tolist() and fs.camids.tolist() == cams.tolist()
    assert fs.paths[3] == "img3.jpg" and fs.missing == () and fs.splits == [""] * 12
    save_features(tmp_path / "b.npz", x, ids)
    fs = load_features(tmp_path / "b.npz")
    assert fs.missing == ("paths", "camids") and fs.paths[:3] == ["0", "1", "2"] and fs.camids.tolist() == [-1] * 12
    assert fs.select([4, 5]).missing == ("paths", "camids")  # a selection keeps what is known


def test_pt_file_reads_like_the_npz(tmp_path):
    x, ids, cams = _toy()
    torch.save({"features": torch.from_numpy(x).to(torch.bfloat16), "pids": torch.from_numpy(ids), "camids": [int(c) for c in cams]},
               tmp_path / "a.pt")
    fs = load_features(tmp_path / "a.pt")
    assert fs.pids.tolist() == ids.tolist() and fs.camids.tolist() == cams.tolist() and fs.missing == ("paths",)
    np.testing.assert_allclose(fs.features, torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(FeatureFileError, match="expected a dict with 'features' and 'pids', got list"):
        load_features(tmp_path / "list.pt")
    torch.save({"features": torch.zeros(2, 3), "pids": np.arange(2)}, tmp_path / "numpy.pt")  # not loadable weights-only
    with pytest.raises(FeatureFileError, match="numpy.pt is not a readable .pt feature file .*save a dict of tensors"):
        load_features(tmp_path / "numpy.pt")


def test_single_file_errors_say_what_is_wrong(tmp_path):
    x, ids, cams = _toy()
    np.savez(tmp_path / "short.npz", features=x, pids=ids[:5])
    with pytest.raises(FeatureFileError, match=r"short.npz: features have shape \(12, 6\) but there are 5 pids"):
        load_features(tmp_path / "short.npz")
    np.savez(tmp_path / "cams.npz", features=x, pids=ids, camids=cams[:3])
    with pytest.raises(FeatureFileError, match="'camids' has 3 entries for 12 rows"):
        load_features(tmp_path / "cams.npz")
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FeatureFileError, match="not a readable .npz file"):
        load_features(tmp_path / "cut.npz")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(FeatureFileError, match=r"unknown feature file type '\.txt'"):
        load_features(tmp_path / "x.txt")
    with pytest.raises(FeatureFileError, match="feature file not found: .*nope.npz"):
        load_features(tmp_path / "nope.npz")
    np.savez(tmp_path / "n.npz", features=x)
    (tmp_path / "n.csv").write_text("name,pid\n" + "".join(f"a{i}.jpg,{i}\n" for i in range(12)))
    with pytest.raises(FeatureFileError, match="n.csv has no 'path' column"):
        load_features(tmp_path / "n.npz")


def test_evaluation_rows_from_every_kind_of_file(tmp_path):
    from safetensors.numpy import save_file

    x, ids, cams = _toy()
    save_features(tmp_path / "q.npz", x[:6], ids[:6], cams[:6])
    save_features(tmp_path / "g.npz", x[6:], ids[6:], cams[6:])
    q, g = load_query_gallery(tmp_path / "q.npz", tmp_path / "g.npz")
    assert q.camids.tolist() == cams[:6].tolist() and q.images is None and g.pids.tolist() == ids[6:].tolist()
    # a .safetensors file with its identities in <stem>.csv (the extract-style single file)
    save_file({"features": x[6:]}, str(tmp_path / "g2.safetensors"))
    (tmp_path / "g2.csv").write_text("path,pid\n" + "".join(f"g{i}.jpg,{p}\n" for i, p in enumerate(ids[6:])))
    q, g = load_query_gallery(tmp_path / "q.npz", tmp_path / "g2.safetensors")
    assert g.pids.tolist() == ids[6:].tolist() and g.camids is None and g.images == [f"g{i}.jpg" for i in range(6)]
    # no identities at all: the evaluation says so
    np.savez(tmp_path / "anon.npz", features=x[6:])
    with pytest.raises(EvaluationError, match="anon.npz: a feature file needs the keys 'features' .* it has no 'pids'"):
        load_query_gallery(tmp_path / "q.npz", tmp_path / "anon.npz")
    with pytest.raises(EvaluationError, match="only `muva extract` outputs carry splits"):
        load_query_gallery(tmp_path / "q.npz", tmp_path / "g.npz", query_split="query")


def test_cli_evaluates_single_files_and_reports_bad_ones_in_one_line(tmp_path):
    rng = np.random.default_rng(3)
    ids, cams = np.arange(30) % 6, (np.arange(30) // 6) % 3
    x = (rng.normal(size=(6, 8))[ids] + 0.8 * rng.normal(size=(30, 8))).astype(np.float32)
    save_features(tmp_path / "q.npz", x[:9], ids[:9], cams[:9])
    torch.save({"features": torch.from_numpy(x[9:]), "pids": torch.from_numpy(ids[9:]), "camids": torch.from_numpy(cams[9:])},
               tmp_path / "g.pt")
    want = evaluate(x[:9], x[9:], q_pids=ids[:9], g_pids=ids[9:], q_camids=cams[:9], g_camids=cams[9:], max_rank=10)
    env = {**os.environ, "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "muva", "evaluate-features", "q.npz", "g.pt", "--quiet", "--max-rank", "10"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"| features | {100 * want.mAP:.1f} | {100 * want.rank1:.1f} |" in r.stdout
    np.savez(tmp_path / "anon.npz", features=x[9:])
    code, err, raw = _cli("evaluate-features", "q.npz", "anon.npz", "--quiet", cwd=tmp_path)
    assert code == 2 and "Traceback" not in raw and err.count("error:") == 1
    assert "anon.npz: a feature file needs the keys 'features' (N × D) and 'pids' (N); it has no 'pids'" in err
    code, err, raw = _cli("evaluate-features", "q.npz", "missing.npz", "--quiet", cwd=tmp_path)
    assert code == 2 and "Traceback" not in raw and "error: feature file not found: missing.npz" in err
