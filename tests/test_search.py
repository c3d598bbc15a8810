"""faiss gallery index: exactness, approximate kinds, save/load, streaming, memory estimates."""

from __future__ import annotations

import numpy as np
import pytest

from muva.utils.featurefiles import FeatureSet
from muva.inference.search import KINDS, GalleryIndex, SearchError, bytes_per_vector, factory_string

pytest.importorskip("faiss")


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def gallery():
    return _unit(3000, 32)


def _brute(q, g, k):
    s = q @ g.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, 1)


def test_flat_is_exact_and_reports_cosine_distance(gallery):
    q = _unit(20, 32, seed=1)
    names = [f"g{i}.jpg" for i in range(len(gallery))]
    index = GalleryIndex.build(gallery, names, pids=np.arange(len(gallery)) % 7, camids=np.arange(len(gallery)) % 3)
    res = index.search(q, k=10)
    ref_idx, ref_sim = _brute(q, gallery, 10)
    np.testing.assert_array_equal(res.indices, ref_idx)
    np.testing.assert_allclose(res.distances, 1 - ref_sim, atol=1e-5)
    assert res.names[3] == [names[i] for i in ref_idx[3]]
    assert res.pids[0].tolist() == (ref_idx[0] % 7).tolist()
    rows = res.to_rows([f"q{i}" for i in range(20)])
    assert len(rows) == 200 and rows[0]["query"] == "q0" and rows[0]["rank"] == 1


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivf-sq8", "hnsw-sq8", "flat-sq8"])
def test_approximate_kinds_recall(gallery, kind):
    q = gallery[:50] + 0.05 * _unit(50, 32, seed=2)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index = GalleryIndex.build(gallery, [str(i) for i in range(len(gallery))], kind=kind, nprobe=64, ef_search=256)
    res = index.search(q, k=10)
    ref, _ = _brute(q, gallery, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.indices, ref)])
    assert recall > 0.8, f"{kind}: recall@10 {recall:.2f}"
    assert (res.indices[:, 0] == np.arange(50)).mean() > 0.95  # the perturbed item itself comes first


def test_save_load_gives_identical_results(gallery, tmp_path):
    names = [f"/x/{i}.jpg" for i in range(len(gallery))]
    for kind in ("flat", "ivf", "hnsw"):
        index = GalleryIndex.build(gallery, names, pids=np.arange(len(gallery)), kind=kind, nprobe=4, ef_search=32)
        q = _unit(5, 32, seed=3)
        before = index.search(q, k=7)
        index.save(tmp_path / kind)
        loaded = GalleryIndex.load(tmp_path / kind)
        after = loaded.search(q, k=7)
        np.testing.assert_array_equal(before.indices, after.indices)
        np.testing.assert_allclose(before.similarities, after.similarities)
        assert after.names == before.names and loaded.info["factory"] == index.info["factory"]
        assert loaded.info.get("nprobe") == index.info.get("nprobe") and loaded.info.get("ef_search") == index.info.get("ef_search")
        mm = GalleryIndex.load(tmp_path / kind, mmap=True) if kind == "flat" else None
        if mm is not None:
            np.testing.assert_array_equal(mm.search(q, k=7).indices, before.indices)


def test_streamed_chunks_equal_one_matrix(gallery):
    names = [str(i) for i in range(len(gallery))]
    whole = GalleryIndex.build(gallery, names, kind="ivf", nlist=16, nprobe=16, seed=1)
    chunks = GalleryIndex.build(iter([gallery[:1000], gallery[1000:2500], gallery[2500:]]), names, kind="ivf", nlist=16, nprobe=16, seed=1)
    q = _unit(10, 32, seed=4)
    np.testing.assert_array_equal(whole.search(q, 5).indices, chunks.search(q, 5).indices)
    with pytest.raises(SearchError, match="2999 gallery names"):
        GalleryIndex.build(gallery, names[:-1])


def test_bytes_per_vector_matches_file_size(gallery, tmp_path):
    for kind in KINDS:
        factory = factory_string(kind, n=len(gallery))
        idx = GalleryIndex.build(gallery, [str(i) for i in range(len(gallery))], kind=kind)
        idx.save(tmp_path / kind)
        per_vec = idx.info["file_bytes_per_vector"]
        est = bytes_per_vector(factory, 32)
        # the file also stores centroids / quantiser tables, so allow a small per-vector overhead
        assert est <= per_vec * 1.02 + 1 and per_vec <= est * 1.25 + 16, (kind, est, per_vec)
    assert bytes_per_vector("Flat", 2048) == 8192 and bytes_per_vector("IVF100,SQ8", 2048) == 2056


def test_errors(gallery, tmp_path):
    index = GalleryIndex.build(gallery, [str(i) for i in range(len(gallery))])
    with pytest.raises(SearchError, match="queries are 16-d but the index holds 32-d"):
        index.search(_unit(1, 16))
    with pytest.raises(SearchError, match="not an index folder"):
        GalleryIndex.load(tmp_path)
    with pytest.raises(SearchError, match="unknown index kind"):
        GalleryIndex.build(gallery, [str(i) for i in range(len(gallery))], kind="annoy")
    with pytest.raises(SearchError, match="faiss cannot build"):
        GalleryIndex.build(gallery, [str(i) for i in range(len(gallery))], factory="Nonsense42")


def test_from_featureset_split(gallery):
    fs = FeatureSet(gallery[:10], [f"{i}.jpg" for i in range(10)], pids=range(10), splits=["query"] * 4 + ["gallery"] * 6)
    idx = GalleryIndex.from_features(fs, split="gallery", progress=False)
    assert len(idx) == 6 and idx.paths[0] == "4.jpg"
    res = idx.search(gallery[4], k=1)
    assert res.names[0][0] == "4.jpg" and abs(res.distances[0, 0]) < 1e-5


def test_from_feature_folder_streams_shards(gallery, tmp_path):
    fs = FeatureSet(gallery[:500], [f"/g/{i}.jpg" for i in range(500)], pids=np.arange(500) % 9, camids=np.arange(500) % 2)
    fs.save(tmp_path / "feats", shard_size=128)  # 4 shards
    idx = GalleryIndex.from_features(tmp_path / "feats", progress=False)
    assert len(idx) == 500 and idx.pids[10] == 1 and idx.camids[11] == 1 and idx.info["source"] == str(tmp_path / "feats")
    ref = GalleryIndex.build(fs.features, fs.paths)
    q = _unit(4, 32, seed=9)
    np.testing.assert_array_equal(idx.search(q, 5).indices, ref.search(q, 5).indices)
