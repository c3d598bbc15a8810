"""CUHK03 single-gallery-shot, multi-split summaries, result tables, feature files and the CLI."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from muva.evaluation import EvaluationError, evaluate, evaluate_splits, results_table, summarize_splits, write_cmc
from muva.evaluation.cuhk03 import hash_uniform
from muva.evaluation.io import save_features
from muva.utils.featurefiles import FeatureFileError, load_features


def naive_single_shot(dist, qp, gp, qc, gc, repeats, seed, max_rank):
    """Explicit single-gallery-shot CMC with the documented draws (see muva.evaluation.cuhk03)."""
    ids = np.unique(gp)
    members = {u: np.flatnonzero(gp == u) for u in ids}  # ascending gallery index
    cmcs = []
    for i in range(len(qp)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        ranked = order[keep]
        positives = [j for j in ranked if gp[j] == qp[i]]
        if not positives:
            continue
        cmc = np.zeros(max_rank)
        for t in range(repeats):
            chosen = set()
            for k, u in enumerate(ids):
                if u == qp[i]:
                    continue
                draw = hash_uniform(seed, t, np.uint64(i), np.uint64(k))[0]
                chosen.add(members[u][min(int(draw * len(members[u])), len(members[u]) - 1)])
            draw = hash_uniform(seed, t, np.uint64(i), np.uint64(len(ids)))[0]
            own = positives[min(int(draw * len(positives)), len(positives) - 1)]
            masked = [j for j in ranked if j in chosen or j == own]
            r = masked.index(own)
            if r < max_rank:
                cmc[r:] += 1.0 / repeats
        cmcs.append(cmc)
    return np.mean(cmcs, 0)


def test_single_gallery_shot_matches_explicit_loop():
    rng = np.random.default_rng(0)
    nq, ng = 25, 120
    qp, gp = rng.integers(0, 10, nq), rng.integers(0, 10, ng)
    qc, gc = rng.integers(0, 2, nq), rng.integers(0, 2, ng)
    dist = rng.integers(0, 5, (nq, ng)).astype(np.float32)  # ties
    ref = naive_single_shot(dist, qp, gp, qc, gc, repeats=4, seed=3, max_rank=10)
    res = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, single_gallery_shot=True, repeats=4, seed=3, max_rank=10)
    np.testing.assert_allclose(res.cmc, ref, atol=1e-12)
    full = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, max_rank=10)
    assert res.mAP == full.mAP  # AP stays on the full list


def test_single_gallery_shot_seeded_and_chunk_independent():
    rng = np.random.default_rng(1)
    dist = rng.random((30, 200))
    qp, gp = rng.integers(0, 20, 30), rng.integers(0, 20, 200)
    qc, gc = rng.integers(0, 2, 30), rng.integers(0, 2, 200)
    kw = dict(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, single_gallery_shot=True)
    a = evaluate(**kw, seed=5)
    b = evaluate(**kw, seed=5, chunk_size=7)
    c = evaluate(**kw, seed=6)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert not np.array_equal(a.cmc, c.cmc)
    assert np.all(np.diff(a.cmc) >= 0) and a.cmc[-1] <= 1.0


def test_single_gallery_shot_with_one_image_per_identity_equals_plain_cmc():
    rng = np.random.default_rng(2)
    gp = np.arange(40)
    qp = rng.choice(40, 15, replace=False)
    dist = rng.random((15, 40))
    plain = evaluate(distmat=dist, q_pids=qp, g_pids=gp, max_rank=20)
    sgs = evaluate(distmat=dist, q_pids=qp, g_pids=gp, single_gallery_shot=True, max_rank=20)
    np.testing.assert_allclose(sgs.cmc, plain.cmc, atol=1e-12)


def _split_data(rng, n_splits=4):
    splits = []
    for _ in range(n_splits):
        ids = np.arange(20)
        q = rng.normal(size=(20, 8)).astype(np.float32)
        g = (q + rng.normal(size=(20, 8)) * 0.9).astype(np.float32)
        splits.append(dict(query_features=q, gallery_features=g, q_pids=ids, g_pids=ids, q_camids=np.zeros(20, int), g_camids=np.ones(20, int)))
    return splits


def test_multisplit_mean_and_std():
    rng = np.random.default_rng(3)
    splits = _split_data(rng)
    ms = evaluate_splits(splits, max_rank=10)
    singles = [evaluate(**s, max_rank=10) for s in splits]
    maps = np.array([r.mAP for r in singles])
    assert ms.num_splits == 4
    assert ms.mAP == pytest.approx(maps.mean()) and ms.std["mAP"] == pytest.approx(maps.std())
    assert ms.rank1 == pytest.approx(np.mean([r.rank1 for r in singles]))
    np.testing.assert_allclose(ms.cmc, np.mean([r.cmc for r in singles], 0))
    # one true match per query: mAP equals mINP
    assert ms.mAP == pytest.approx(ms.mINP)
    assert "±" in ms.summary() and ms.to_dict()["num_splits"] == 4


def test_multisplit_index_form_and_errors():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(30, 4)).astype(np.float32)
    pids = np.repeat(np.arange(15), 2)
    cams = np.tile([0, 1], 15)
    splits = [dict(features=feats, pids=pids, camids=cams, query=np.arange(0, 30, 2), gallery=np.arange(1, 30, 2))]
    ms = evaluate_splits(splits, max_rank=5)
    direct = evaluate(feats[0::2], feats[1::2], q_pids=pids[0::2], g_pids=pids[1::2], q_camids=cams[0::2], g_camids=cams[1::2], max_rank=5)
    assert ms.mAP == direct.mAP and ms.std["mAP"] == 0.0
    bad = [dict(distmat=np.zeros((1, 5)), q_pids=[99], g_pids=np.arange(5), max_rank=5)]
    with pytest.raises(EvaluationError, match="split 0"):
        evaluate_splits(bad)
    with pytest.raises(EvaluationError):
        summarize_splits([])


def _result(mAP, r1):
    from muva.evaluation import EvalResult

    return EvalResult(cmc=np.array([r1, min(1.0, r1 + 0.1), 1.0]), mAP=mAP, mINP=mAP / 2, num_valid_queries=10, num_queries=10, num_gallery=30)


def test_tables_paper_layout(tmp_path):
    res = {"MA→D": _result(0.52, 0.721), "MA→MS": _result(0.276, 0.569)}
    table = results_table(res, method="MUVA")
    md = table.to_markdown()
    lines = md.splitlines()
    assert lines[0] == "| Method | MA→D mAP | MA→D R1 | MA→MS mAP | MA→MS R1 | Average mAP | Average R1 |"
    assert lines[2] == "| MUVA | 52.0 | 72.1 | 27.6 | 56.9 | 39.8 | 64.5 |"
    rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert rows[1][0] == "MUVA" and float(rows[1][-1]) == pytest.approx((72.1 + 56.9) / 2)
    js = table.to_json()
    assert js["rows"][0]["average"]["mAP"] == pytest.approx((0.52 + 0.276) / 2)
    assert js["rows"][0]["results"]["MA→D"]["rank1"] == pytest.approx(0.721)
    paths = table.write(tmp_path)
    assert json.loads(paths["json"].read_text())["targets"] == ["MA→D", "MA→MS"]
    cmc = list(csv.reader(open(paths["cmc"])))
    assert cmc[0] == ["rank", "MA→D", "MA→MS"] and len(cmc) == 4 and float(cmc[1][1]) == pytest.approx(72.1)
    # several methods, one missing a target
    multi = results_table({"A": res, "B": {"MA→D": _result(0.5, 0.7)}})
    assert multi.to_markdown().splitlines()[3] == "| B | 50.0 | 70.0 | – | – | 50.0 | 70.0 |"
    out = write_cmc({"x": _result(0.1, 0.2)}, tmp_path / "c.csv", max_rank=2)
    assert len(out.read_text().splitlines()) == 3
    with pytest.raises(TypeError):
        results_table({"x": 3})


def test_feature_file_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    f = rng.normal(size=(6, 3)).astype(np.float16)
    p = save_features(tmp_path / "q.npz", f, [1, 2, 3, 4, 5, 6], camids=[0, 1, 0, 1, 0, 1], images=[f"{i}.jpg" for i in range(6)])
    ff = load_features(p)
    assert ff.features.dtype == np.float32 and ff.pids.tolist() == [1, 2, 3, 4, 5, 6] and ff.paths[2] == "2.jpg"
    np.savez(tmp_path / "bad.npz", feats=f)
    with pytest.raises(FeatureFileError, match="'features'"):
        load_features(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", features=f, pids=np.arange(5))
    with pytest.raises(FeatureFileError, match="5 pids"):
        load_features(tmp_path / "short.npz")
    with pytest.raises(FeatureFileError, match="not found"):
        load_features(tmp_path / "missing.npz")


def test_cli_evaluate_features(tmp_path):
    from typer.testing import CliRunner

    from muva.cli import app

    rng = np.random.default_rng(6)
    ids = rng.integers(0, 12, 150)
    x = (rng.normal(size=(12, 16))[ids] + rng.normal(size=(150, 16))).astype(np.float32)
    cams = rng.integers(0, 3, 150)
    save_features(tmp_path / "q.npz", x[:30], ids[:30], cams[:30])
    save_features(tmp_path / "g.npz", x[30:], ids[30:], cams[30:])
    res = evaluate(x[:30], x[30:], q_pids=ids[:30], g_pids=ids[30:], q_camids=cams[:30], g_camids=cams[30:])
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["evaluate-features", str(tmp_path / "q.npz"), str(tmp_path / "g.npz"), "--name", "toy", "--quiet", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert f"| features | {100 * res.mAP:.1f} | {100 * res.rank1:.1f} |" in r.output
    assert json.loads((out / "results.json").read_text())["rows"][0]["results"]["toy"]["mAP"] == pytest.approx(res.mAP)
    rr = CliRunner().invoke(app, ["evaluate-features", str(tmp_path / "q.npz"), str(tmp_path / "g.npz"), "--rerank", "sparse", "--k1", "5", "--k2", "2", "--quiet"])
    assert rr.exit_code == 0, rr.output
    bad = CliRunner().invoke(app, ["evaluate-features", str(tmp_path / "q.npz"), str(tmp_path / "nope.npz")])
    assert bad.exit_code != 0 and "not found" in bad.output


def test_dataset_split_from_records():
    from muva.data.records import ImageRecord, ReIDDataset
    from muva.evaluation.multisplit import dataset_split

    rng = np.random.default_rng(7)
    feats = rng.normal(size=(8, 4)).astype(np.float32)
    paths = [f"/d/{i}.jpg" for i in range(8)]
    index = {p: i for i, p in enumerate(paths)}
    q = [ImageRecord(paths[i], pid=i, camid=0, dataset="toy") for i in range(4)]
    g = [ImageRecord(paths[4 + i], pid=i, camid=1, dataset="toy") for i in range(4)]
    ds = ReIDDataset("toy", "/d", train=[], query=q, gallery=g)
    kw = dataset_split(ds, feats, index)
    ms = evaluate_splits([kw, kw], max_rank=4)
    direct = evaluate(feats[:4], feats[4:], q_pids=np.arange(4), g_pids=np.arange(4), q_camids=np.zeros(4, int), g_camids=np.ones(4, int), max_rank=4)
    assert ms.mAP == direct.mAP and ms.num_splits == 2
    with pytest.raises(EvaluationError, match="no feature row"):
        dataset_split(ds, feats, {p: i for i, p in enumerate(paths[:6])})


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ap", "bogus"], "error: unknown ap mode 'bogus'; choose one of community, official"),
        (["--metric", "manhattan"], "error: unknown metric 'manhattan'; choose one of cosine, euclidean"),
        (["--rerank", "fuzzy"], "error: unknown re-ranking mode 'fuzzy'; choose one of exact, sparse"),
    ],
)
def test_cli_evaluate_features_bad_flag_is_one_line_error(tmp_path, flags, message):
    """A bad flag value reaches the user as one ``error:`` line and exit code 2, never a traceback."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(8)
    ids = np.repeat(np.arange(4), 5)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    save_features(tmp_path / "q.npz", x[:8], ids[:8], np.zeros(8, dtype=np.int64))
    save_features(tmp_path / "g.npz", x[8:], ids[8:], np.ones(12, dtype=np.int64))
    env = {**os.environ, "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "muva", "evaluate-features", "q.npz", "g.npz", "--quiet", *flags],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert err.count("error:") == 1 and message in err, err
    assert r.stdout == ""
