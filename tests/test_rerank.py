"""k-reciprocal re-ranking: exact mode vs a straightforward dense implementation; sparse vs exact."""

from __future__ import annotations

import numpy as np
import pytest

from muva.evaluation import EvaluationError, RerankConfig, evaluate, rerank_distances, rerank_features

pytest.importorskip("torch")
pytest.importorskip("scipy")


def dense_rerank(q_g, q_q, g_g, k1=20, k2=6, lam=0.3):
    """Zhong et al.'s algorithm written plainly: dense (q+g)² arrays, one image at a time,
    neighbours from a stable argsort."""
    nq = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    full = np.power(full, 2).astype(np.float32)
    O = np.transpose(full / np.max(full, axis=0))
    n = O.shape[0]
    rank = np.argsort(O, axis=1, kind="stable")
    kh = int(np.around(k1 / 2.0))

    def reciprocal(i, k):
        return np.array([j for j in rank[i, : k + 1] if i in rank[j, : k + 1]], dtype=np.int64)

    V = np.zeros_like(O)
    for i in range(n):
        R = reciprocal(i, k1)
        expanded = list(R)
        for c in R:
            Rc = reciprocal(c, kh)
            if len(np.intersect1d(Rc, R)) > 2.0 / 3 * len(Rc):
                expanded.extend(Rc)
        expanded = np.unique(np.asarray(expanded, dtype=np.int64))
        w = np.exp(-O[i, expanded])
        V[i, expanded] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(0) for i in range(n)])
    J = np.zeros((nq, n), dtype=np.float32)
    for i in range(nq):
        s = np.minimum(V[i][None, :], V).sum(1)
        J[i] = 1 - s / (2 - s)
    return (J * (1 - lam) + O[:nq] * lam)[:, nq:]


def clustered(rng, nq, ng, n_ids=15, dim=16, noise=0.8):
    ids = rng.integers(0, n_ids, nq + ng)
    x = rng.normal(size=(n_ids, dim))[ids] + noise * rng.normal(size=(nq + ng, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:nq], x[nq:], ids[:nq], ids[nq:]


def cos_dist(a, b):
    return (1 - a @ b.T).astype(np.float32)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.0)])
def test_exact_mode_matches_dense_reference(k1, k2, lam):
    rng = np.random.default_rng(k1)
    q, g, _, _ = clustered(rng, 25, 110)
    ref = dense_rerank(cos_dist(q, g), cos_dist(q, q), cos_dist(g, g), k1, k2, lam)
    got = rerank_distances(cos_dist(q, g), cos_dist(q, q), cos_dist(g, g), k1=k1, k2=k2, lambda_value=lam)
    assert np.abs(got - ref).max() < 1e-5
    feat = rerank_features(q, g, k1=k1, k2=k2, lambda_value=lam, mode="exact")
    assert np.abs(feat - ref).max() < 1e-5


def test_exact_mode_with_ties_matches_stable_reference():
    rng = np.random.default_rng(11)
    # integer points: many exactly equal distances, so neighbour-list cut-offs fall on ties
    pts = rng.integers(0, 4, (90, 2)).astype(np.float64)
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).astype(np.float32)
    nq = 20
    ref = dense_rerank(d[:nq, nq:], d[:nq, :nq], d[nq:, nq:], 8, 3, 0.3)
    got = rerank_distances(d[:nq, nq:], d[:nq, :nq], d[nq:, nq:], k1=8, k2=3)
    assert np.abs(got - ref).max() < 1e-5


def test_sparse_agrees_with_exact_and_metrics():
    rng = np.random.default_rng(2)
    q, g, qp, gp = clustered(rng, 40, 200)
    cams = rng.integers(0, 3, 240)
    ex = rerank_features(q, g, mode="exact")
    sp = rerank_features(q, g, mode="sparse", chunk_memory=1 << 16)  # tiny budget: many chunks
    assert np.abs(ex - sp).max() < 1e-5
    kw = dict(q_pids=qp, g_pids=gp, q_camids=cams[:40], g_camids=cams[40:])
    via_matrix = evaluate(distmat=ex, **kw)
    for mode in ("exact", "sparse"):
        res = evaluate(q, g, rerank=mode, **kw, chunk_size=9)
        assert res.rerank == mode
        assert abs(res.mAP - via_matrix.mAP) < 1e-4 and np.abs(res.cmc - via_matrix.cmc).max() < 1e-4
    # the dense reference gives the same metrics
    ref = dense_rerank(cos_dist(q, g), cos_dist(q, q), cos_dist(g, g))
    assert abs(evaluate(distmat=ref, **kw).mAP - via_matrix.mAP) < 1e-4
    # re-ranking changes the ranking on clustered data
    assert evaluate(q, g, **kw).mAP != pytest.approx(via_matrix.mAP, abs=1e-6)


def test_euclidean_metric_matches_reference():
    rng = np.random.default_rng(3)
    q, g, _, _ = clustered(rng, 15, 60)
    q, g = q * 3.0, g * 2.0  # not unit norm
    sq = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1).astype(np.float32)  # noqa: E731
    ref = dense_rerank(sq(q, g), sq(q, q), sq(g, g), 6, 3, 0.3)
    got = rerank_features(q, g, k1=6, k2=3, metric="euclidean")
    assert np.abs(got - ref).max() < 1e-5


def test_config_validation():
    with pytest.raises(EvaluationError, match="mode"):
        RerankConfig(mode="fast")
    with pytest.raises(EvaluationError, match="lambda"):
        RerankConfig(lambda_value=2.0)
    with pytest.raises(EvaluationError, match="k1 and k2"):
        RerankConfig(k1=0)
    assert RerankConfig(k1=5).k_half == 2  # numpy rounding, as the reference


def test_numba_and_numpy_jaccard_agree():
    pytest.importorskip("numba")
    from muva.evaluation.rerank import RerankConfig, RerankDistances
    from muva.evaluation.rerank_jaccard import jaccard_block

    rng = np.random.default_rng(9)
    q, g, _, _ = clustered(rng, 30, 150)
    src = RerankDistances(q, g, RerankConfig(k1=10, k2=4))
    ref = jaccard_block(src.Vq, src.Vg, 0, 30, 150, use_jit=False)
    assert ref.max() > 0
    np.testing.assert_allclose(jaccard_block(src.Vq, src.Vg, 0, 30, 150, use_jit=True), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(jaccard_block(src.Vq, src.Vg, 5, 17, 150, use_jit=True), ref[5:17], rtol=0, atol=1e-12)
    # the NumPy path split into many sub-chunks gives the same sums
    np.testing.assert_allclose(jaccard_block(src.Vq, src.Vg, 0, 30, 150, max_pairs=50, use_jit=False), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["exact", "sparse"])
def test_blocked_neighbour_search_matches_reference(mode):
    # 640 images with a tiny memory budget: 256-row blocks, so the upper-triangle blocks are
    # used for both their rows and (transposed) their columns; duplicated images add exact ties
    # Features of ±0.25 in 16 dimensions: unit norm and dot products that are multiples of
    # 1/16, exact in float32 whatever order a BLAS kernel sums in, so ties are ties on every
    # machine (with arbitrary floats the blocked and the dense products may differ by an ulp
    # and order the duplicates differently).
    rng = np.random.default_rng(12)
    ids = rng.integers(0, 30, 560)
    signs = np.where(rng.random((30, 16)) < 0.5, -1.0, 1.0)[ids]
    signs[rng.random((560, 16)) < 0.2] *= -1.0
    x = (0.25 * signs).astype(np.float32)
    q, g = x[:60], x[60:]
    g = np.concatenate([g, g[:80]])
    ref = dense_rerank(cos_dist(q, g), cos_dist(q, q), cos_dist(g, g), 10, 4, 0.3)
    got = rerank_features(q, g, k1=10, k2=4, mode=mode, chunk_memory=1 << 10)
    if mode == "exact":
        assert np.abs(got - ref).max() < 1e-5
    else:  # ties (the duplicates) may be ordered differently
        assert np.median(np.abs(got - ref)) < 1e-5
