"""Evaluator vs a deliberately naive per-query loop, hand-computed cases, chunking, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from muva.evaluation import EvaluationError, evaluate


def naive_eval(distmat, q_pids, g_pids, q_camids=None, g_camids=None, q_images=None, g_images=None, max_rank=50, ap="community"):
    """The community protocol written as plainly as possible: one query at a time."""
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        if q_camids is not None:
            junk = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        elif q_images is not None:
            junk = np.array([g_images[j] == q_images[i] for j in order])
        else:
            junk = np.zeros(len(order), dtype=bool)
        good = (g_pids[order] == q_pids[i])[~junk]
        if not good.any():
            continue
        hit_pos = np.flatnonzero(good)
        cmc = np.zeros(max_rank)
        if hit_pos[0] < max_rank:
            cmc[hit_pos[0]:] = 1
        cmcs.append(cmc)
        if ap == "community":
            aps.append(np.mean([(k + 1) / (p + 1) for k, p in enumerate(hit_pos)]))
        else:
            total, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
            for pos, is_good in enumerate(good):
                hits += int(is_good)
                recall, precision = hits / len(hit_pos), hits / (pos + 1)
                total += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
                if hits == len(hit_pos):
                    break
            aps.append(total)
        inps.append(len(hit_pos) / (hit_pos[-1] + 1))
    return np.mean(cmcs, 0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def random_case(rng, nq, ng, n_ids=12, n_cams=3, levels=6):
    q_pids = rng.integers(1, n_ids, nq)
    g_pids = rng.integers(0, n_ids, ng)  # pid 0 = distractors, never a query identity
    q_cams = rng.integers(0, n_cams, nq)
    g_cams = rng.integers(0, n_cams, ng)
    dist = rng.integers(0, levels, (nq, ng)).astype(np.float32)  # few levels: many ties
    return dist, q_pids, g_pids, q_cams, g_cams


def assert_same(res, ref, atol=1e-9):
    cmc, mAP, mINP, nvalid = ref
    np.testing.assert_allclose(res.cmc, cmc, atol=atol, rtol=0)
    assert res.mAP == pytest.approx(mAP, abs=atol)
    assert res.mINP == pytest.approx(mINP, abs=atol)
    assert res.num_valid_queries == nvalid


@pytest.mark.parametrize("ap", ["community", "official"])
def test_matches_naive_loop_with_ties_junk_distractors(ap):
    rng = np.random.default_rng(0)
    for _ in range(12):
        nq, ng = int(rng.integers(3, 40)), int(rng.integers(30, 200))
        dist, qp, gp, qc, gc = random_case(rng, nq, ng, levels=int(rng.integers(2, 9)))
        ref = naive_eval(dist, qp, gp, qc, gc, max_rank=20, ap=ap)
        res = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, max_rank=20, ap=ap)
        assert_same(res, ref)
        assert res.num_queries == nq


def test_chunk_sizes_give_identical_results():
    rng = np.random.default_rng(1)
    dist, qp, gp, qc, gc = random_case(rng, 23, 150)
    base = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, chunk_size=1000)
    for size in (1, 7, 23, 24):
        res = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, chunk_size=size)
        np.testing.assert_array_equal(res.cmc, base.cmc)
        assert res.mAP == base.mAP and res.mINP == base.mINP
        np.testing.assert_array_equal(res.first_match, base.first_match)
    # a memory budget too small for one row still works (one row per chunk)
    tiny = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, chunk_memory=1)
    assert tiny.info["chunk_rows"] == 1 and tiny.mAP == base.mAP


def test_hand_computed_case():
    # filtered list (g2 is junk: same id, same camera): g0(id 2) g1(id 1) g3(id 3) g4(id 1)
    dist = np.array([[0.1, 0.2, 0.15, 0.4, 0.5]])
    res = evaluate(distmat=dist, q_pids=[1], g_pids=[2, 1, 1, 3, 1], q_camids=[0], g_camids=[1, 1, 0, 1, 1], max_rank=5)
    np.testing.assert_allclose(res.cmc, [0, 1, 1, 1, 1])
    assert res.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res.mINP == pytest.approx(2 / 4)
    official = evaluate(distmat=dist, q_pids=[1], g_pids=[2, 1, 1, 3, 1], q_camids=[0], g_camids=[1, 1, 0, 1, 1], ap="official", max_rank=5)
    # steps: miss (p=0), hit (r=.5, p=1/2), miss (p=1/3), hit (r=1, p=2/4)
    assert official.mAP == pytest.approx(0.5 * (0 + 0.5) / 2 + 0.5 * (1 / 3 + 0.5) / 2)
    assert official.rank1 == 0.0 and official.rank(2) == 1.0


def test_ties_follow_stable_order():
    # all distances equal: the stable order is the gallery index order
    dist = np.zeros((1, 4), dtype=np.float32)
    res = evaluate(distmat=dist, q_pids=[5], g_pids=[7, 5, 7, 5], q_camids=[0], g_camids=[1, 1, 1, 1], max_rank=4)
    np.testing.assert_allclose(res.cmc, [0, 1, 1, 1])
    assert res.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res.first_match.tolist() == [1]


def test_first_match_beyond_max_rank_counts_as_miss():
    dist = np.arange(30, dtype=np.float64)[None, :]
    gp = np.r_[np.full(29, 2), 1]
    res = evaluate(distmat=dist, q_pids=[1], g_pids=gp, q_camids=[0], g_camids=np.ones(30, int), max_rank=10)
    assert res.cmc.sum() == 0 and res.mAP == pytest.approx(1 / 30) and res.mINP == pytest.approx(1 / 30)


def test_all_invalid_queries_raise_clear_error():
    dist = np.random.default_rng(0).random((3, 6))
    with pytest.raises(EvaluationError, match="no valid query"):
        # every true match shares the query's camera
        evaluate(distmat=dist, q_pids=[1, 2, 3], g_pids=[1, 2, 3, 4, 4, 4], q_camids=[0, 0, 0], g_camids=[0, 0, 0, 1, 1, 1], max_rank=5)


def test_invalid_queries_are_skipped_and_counted():
    dist = np.random.default_rng(0).random((3, 5))
    res = evaluate(distmat=dist, q_pids=[1, 2, 9], g_pids=[1, 2, 2, 3, 3], q_camids=[0, 0, 0], g_camids=[1, 0, 1, 1, 1], max_rank=5)
    assert res.num_valid_queries == 2 and res.num_invalid_queries == 1
    assert np.isnan(res.ap[2]) and res.first_match[2] == -1


def test_camera_less_removes_only_same_image():
    rng = np.random.default_rng(3)
    ng = 60
    g_pids = rng.integers(0, 8, ng)
    feats = rng.normal(size=(ng, 8)).astype(np.float32)
    qidx = rng.choice(ng, 15, replace=False)  # queries are gallery images (query set inside the gallery)
    names = [f"img{i}.jpg" for i in range(ng)]
    qf = feats[qidx]
    res = evaluate(qf, feats, q_pids=g_pids[qidx], g_pids=g_pids, q_images=[names[i] for i in qidx], g_images=names, max_rank=10)
    gn = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    dist = 1 - gn[qidx] @ gn.T
    ref = naive_eval(dist, g_pids[qidx], g_pids, q_images=[names[i] for i in qidx], g_images=names, max_rank=10)
    assert_same(res, ref)
    assert res.info["junk"] == "same image"
    # without image ids nothing is removed: every query finds itself first
    res_all = evaluate(qf, feats, q_pids=g_pids[qidx], g_pids=g_pids, max_rank=10)
    assert res_all.rank1 == 1.0
    # camera ids that are all unknown (-1) behave as camera-less
    res_unknown = evaluate(qf, feats, q_pids=g_pids[qidx], g_pids=g_pids, q_camids=np.full(15, -1), g_camids=np.full(ng, -1), max_rank=10)
    assert res_unknown.rank1 == 1.0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_features_path_matches_distance_matrix(metric):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 10, 140)
    centres = rng.normal(size=(10, 32))
    x = (centres[ids] + rng.normal(size=(140, 32))).astype(np.float32)
    cams = rng.integers(0, 3, 140)
    q, g = x[:30], x[30:]
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        dist = 1 - qn.astype(np.float64) @ gn.T.astype(np.float64)
    else:
        dist = ((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(-1)
    ref = naive_eval(dist, ids[:30], ids[30:], cams[:30], cams[30:], max_rank=20)
    res = evaluate(q, g, q_pids=ids[:30], g_pids=ids[30:], q_camids=cams[:30], g_camids=cams[30:], metric=metric, max_rank=20, chunk_size=7)
    assert_same(res, ref)


def test_half_precision_features_accepted():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 16)).astype(np.float16)
    ids, cams = rng.integers(0, 6, 80), rng.integers(0, 2, 80)
    kw = dict(q_pids=ids[:20], g_pids=ids[20:], q_camids=cams[:20], g_camids=cams[20:])
    r16 = evaluate(x[:20], x[20:], **kw)
    r32 = evaluate(x[:20].astype(np.float32), x[20:].astype(np.float32), **kw)
    assert r16.mAP == r32.mAP and np.array_equal(r16.cmc, r32.cmc)
    xb = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    rb = evaluate(xb[:20], xb[20:], **kw)
    xb32 = xb.float().numpy()
    assert rb.mAP == evaluate(xb32[:20], xb32[20:], **kw).mAP


def test_small_gallery_lowers_max_rank_with_warning():
    with pytest.warns(UserWarning, match="max_rank lowered"):
        res = evaluate(distmat=np.array([[0.2, 0.1, 0.3]]), q_pids=[1], g_pids=[1, 2, 3], q_camids=[0], g_camids=[1, 1, 1])
    assert len(res.cmc) == 3 and res.rank1 == 0.0 and res.rank5 == 1.0


def test_input_errors_are_clear():
    with pytest.raises(EvaluationError, match="both q_camids and g_camids"):
        evaluate(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1, 2], q_camids=[0])
    with pytest.raises(EvaluationError, match="g_pids has 1 entries"):
        evaluate(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1])
    with pytest.raises(EvaluationError, match="unknown ap mode"):
        evaluate(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1, 2], ap="matlab")
    with pytest.raises(EvaluationError, match="NaN"):
        evaluate(distmat=np.array([[np.nan, 0.0]]), q_pids=[1], g_pids=[1, 2], max_rank=2)
    with pytest.raises(EvaluationError, match="re-ranking needs"):
        evaluate(distmat=np.zeros((1, 2)), q_pids=[1], g_pids=[1, 2], rerank="exact")


def test_result_object():
    rng = np.random.default_rng(6)
    dist, qp, gp, qc, gc = random_case(rng, 10, 80)
    res = evaluate(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc)
    d = res.to_dict()
    assert d["rank1"] == res.cmc[0] and d["rank5"] == res.cmc[4] and d["rank10"] == res.cmc[9]
    assert len(d["cmc"]) == 50 and "mAP" in res.summary()


def test_gpu_matches_naive_loop_exactly():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(7)
    # small-integer features: squared Euclidean distances are exact integers on any device,
    # with many exact ties, so the GPU ranks must equal the naive loop's exactly
    x = rng.integers(-2, 3, (700, 6)).astype(np.float32)
    ids, cams = rng.integers(0, 30, 700), rng.integers(0, 4, 700)
    q, g = x[:120], x[120:]
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    ref = naive_eval(dist, ids[:120], ids[120:], cams[:120], cams[120:])
    for chunk in (1, 37, 500):
        res = evaluate(q, g, q_pids=ids[:120], g_pids=ids[120:], q_camids=cams[:120], g_camids=cams[120:],
                       metric="euclidean", device="cuda", chunk_size=chunk)
        assert_same(res, ref)
    sgs_cpu = evaluate(q, g, q_pids=ids[:120], g_pids=ids[120:], q_camids=cams[:120], g_camids=cams[120:],
                       metric="euclidean", single_gallery_shot=True)
    sgs_gpu = evaluate(q, g, q_pids=ids[:120], g_pids=ids[120:], q_camids=cams[:120], g_camids=cams[120:],
                       metric="euclidean", single_gallery_shot=True, device="cuda")
    np.testing.assert_allclose(sgs_gpu.cmc, sgs_cpu.cmc, atol=1e-12)


def test_cpu_evaluation_imports_neither_torch_nor_scipy():
    """``import muva.evaluation`` and a CPU evaluation run on NumPy alone; torch and SciPy come with re-ranking."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from muva.evaluation import evaluate, EvalResult\n"
        "import muva.evaluation.metrics as m, muva.evaluation.result as r\n"
        "assert m.EvalResult is r.EvalResult is EvalResult\n"
        "x = np.eye(6, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 3, 4]]\n"
        "res = evaluate(x[:3], x[3:], q_pids=[0, 1, 2], g_pids=[0, 1, 2, 3, 4])\n"
        "print(round(res.mAP, 6), 'torch' in sys.modules, 'scipy' in sys.modules)\n"
        "from muva.evaluation import rerank_features\n"
        "rerank_features(x[:3], x[3:], k1=2, k2=1)\n"
        "print('torch' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.0", "False", "False", "True", "True"]
