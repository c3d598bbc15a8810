"""Confidence intervals (muva.evaluation.stats) and the per-query result file (muva.evaluation.perquery)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from muva.evaluation import (
    EvalResult,
    EvaluationError,
    Interval,
    PerQuery,
    bootstrap_interval,
    bootstrap_over_seeds,
    evaluate,
    evaluate_splits,
    load_per_query,
    paired_bootstrap_difference,
    paired_seed_difference,
    save_per_query,
    seed_interval,
)
from muva.utils.errors import MuvaError

# Student t quantile 0.975 with 2 degrees of freedom, in closed form (for 2 dof,
# t_p = (2p - 1) * sqrt(2 / (4p(1 - p)))): 4.30265...
T_975_2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))


def _problem(seed: int, nq: int = 40, ng: int = 120, ids: int = 15):
    """A random query/gallery problem with some queries that have no true match."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, ids + 3, nq)  # ids >= `ids` never appear in the gallery: invalid queries
    g_pids = rng.integers(0, ids, ng)
    return dict(
        query_features=rng.normal(size=(nq, 8)).astype(np.float32), gallery_features=rng.normal(size=(ng, 8)).astype(np.float32),
        q_pids=q_pids, g_pids=g_pids, q_camids=rng.integers(0, 3, nq), g_camids=rng.integers(0, 3, ng), max_rank=20,
    )


def _pq(ap, first=None) -> PerQuery:
    ap = np.asarray(ap, dtype=np.float64)
    first = np.zeros(len(ap), dtype=np.int64) if first is None else np.asarray(first)
    return PerQuery(ap=ap, inp=ap / 2, first_match=first)


# --------------------------------------------------------------------------------------
# t-intervals over seeds


def test_seed_interval_matches_hand_computation():
    iv = seed_interval([0.5, 0.6, 0.7])
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert T_975_2 == pytest.approx(4.302653, abs=1e-6) and half == pytest.approx(0.2484138, abs=1e-7)
    assert iv.mean == pytest.approx(0.6, abs=1e-15)
    assert iv.low == pytest.approx(0.6 - half, abs=1e-12) and iv.high == pytest.approx(0.6 + half, abs=1e-12)
    assert iv.half_width == pytest.approx(half, abs=1e-12)
    assert iv.n == 3 and "Student t" in iv.method and iv.confidence == 0.95
    # a wider confidence gives a wider interval
    assert seed_interval([0.5, 0.6, 0.7], confidence=0.99).half_width > iv.half_width


def test_seed_interval_of_one_run_has_no_bounds():
    iv = seed_interval([0.42])
    assert iv.mean == 0.42 and iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.high)
    assert "single run" in iv.method
    d = iv.to_dict()
    assert d["mean"] == 0.42 and d["low"] is None and d["high"] is None and d["n"] == 1
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN


def test_seed_interval_rejects_bad_values():
    with pytest.raises(EvaluationError, match="empty"):
        seed_interval([])
    with pytest.raises(EvaluationError, match="finite"):
        seed_interval([0.5, float("nan")])
    with pytest.raises(EvaluationError, match="confidence"):
        seed_interval([0.5, 0.6], confidence=95)


def test_paired_seed_difference():
    iv = paired_seed_difference([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # +0.1 on every seed: zero width
    assert iv.mean == pytest.approx(0.1, abs=1e-12) and iv.half_width == pytest.approx(0.0, abs=1e-12)
    same = paired_seed_difference([0.5, 0.61, 0.7], [0.5, 0.61, 0.7])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1
    iv = paired_seed_difference([0.6, 0.8, 1.0], [0.5, 0.6, 0.7])
    assert iv.mean == pytest.approx(0.2) and iv.half_width == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))
    with pytest.raises(EvaluationError, match="3 variant values but 2 reference values") as exc:
        paired_seed_difference([0.5, 0.6, 0.7], [0.5, 0.6])
    assert isinstance(exc.value, MuvaError)


# --------------------------------------------------------------------------------------
# bootstraps over queries


def test_bootstrap_is_deterministic_per_seed():
    rng = np.random.default_rng(0)
    splits = [_pq(rng.random(60)), _pq(rng.random(45))]
    a = bootstrap_interval(splits, "mAP", n_boot=300, seed=3)
    b = bootstrap_interval(splits, "mAP", n_boot=300, seed=3)
    c = bootstrap_interval(splits, "mAP", n_boot=300, seed=4)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.mean == c.mean == pytest.approx(np.mean([splits[0].mAP, splits[1].mAP]))
    assert a.n == 105 and "2 splits" in a.method and "300 draws" in a.method


def test_bootstrap_contains_estimate_and_shrinks_with_more_queries():
    rng = np.random.default_rng(1)
    small = bootstrap_interval([_pq(rng.random(40))], "mAP", n_boot=2000)
    large = bootstrap_interval([_pq(rng.random(4000))], "mAP", n_boot=2000)
    for iv in (small, large):
        assert iv.low < iv.mean < iv.high
    assert large.half_width < small.half_width / 5  # ~ 1/sqrt(100) of it


def test_bootstrap_width_matches_the_standard_error():
    """Percentile bootstrap of a mean ~ normal interval: ±1.96 · sqrt(Σ_s σ_s²/n_s) / S."""
    rng = np.random.default_rng(2)
    x1, x2 = rng.random(800), rng.random(500) ** 2
    iv = bootstrap_interval([_pq(x1), _pq(x2)], "mAP", n_boot=4000, seed=0)
    se = math.sqrt(x1.var() / len(x1) + x2.var() / len(x2)) / 2
    assert iv.half_width == pytest.approx(1.96 * se, rel=0.08)
    assert iv.mean == pytest.approx((x1.mean() + x2.mean()) / 2)


def test_identical_queries_give_a_zero_width_interval():
    pq = _pq(np.full(30, 0.5), first=np.r_[np.zeros(30, int)])
    for metric, value in (("mAP", 0.5), ("mINP", 0.25), ("rank1", 1.0)):
        iv = bootstrap_interval([pq], metric, n_boot=200)
        assert iv.mean == iv.low == iv.high == value


def test_bootstrap_rank1_and_minp_use_their_per_query_values():
    # rank1 per query: first match at 0 -> 1, otherwise 0; invalid queries (-1) are left out
    pq = PerQuery(ap=[1.0, 0.5, 0.2, np.nan], inp=[1.0, 0.5, 0.1, np.nan], first_match=[0, 1, 3, -1])
    assert pq.num_valid_queries == 3 and pq.rank1 == pytest.approx(1 / 3)
    iv = bootstrap_interval([pq], "rank1", n_boot=500)
    assert iv.mean == pytest.approx(1 / 3) and 0.0 <= iv.low < iv.mean < iv.high <= 1.0 and iv.n == 3
    assert bootstrap_interval([pq], "mINP", n_boot=50).mean == pytest.approx(1.6 / 3)
    with pytest.raises(EvaluationError, match="unknown metric 'R1'"):
        bootstrap_interval([pq], "R1")


def test_bootstrap_over_seeds():
    rng = np.random.default_rng(5)
    run_a = [_pq(rng.random(50)), _pq(rng.random(30))]
    run_b = [_pq(rng.random(50)), _pq(rng.random(30))]
    one = bootstrap_interval(run_a, "mAP", n_boot=400, seed=1)
    # one seed, or the same run twice, is the single-run bootstrap
    for runs in ([run_a], [run_a, run_a]):
        iv = bootstrap_over_seeds(runs, "mAP", n_boot=400, seed=1)
        assert (iv.mean, iv.low, iv.high) == (one.mean, one.low, one.high)
    both = bootstrap_over_seeds([run_a, run_b], "mAP", n_boot=400, seed=1)
    reported = [np.mean([s.mAP for s in r]) for r in (run_a, run_b)]
    assert both.mean == pytest.approx(np.mean(reported)) and both.low < both.mean < both.high
    assert "2 seeds" in both.method
    # averaging two independent seeds per query narrows the query-sampling spread
    assert both.half_width < one.half_width
    with pytest.raises(EvaluationError, match="split 1: run 1 has 29 valid queries but run 0 has 30"):
        bootstrap_over_seeds([run_a, [run_b[0], _pq(rng.random(29))]], "mAP")
    with pytest.raises(EvaluationError, match="run 1 has 1 splits but run 0 has 2"):
        bootstrap_over_seeds([run_a, run_b[:1]], "mAP")
    with pytest.raises(EvaluationError, match=r"wrap a single run as \[run\]"):
        bootstrap_over_seeds(run_a, "mAP")


def test_paired_bootstrap_difference():
    rng = np.random.default_rng(6)
    ref = [[_pq(rng.random(80) * 0.8)]]
    same = paired_bootstrap_difference(ref, ref, "mAP", n_boot=300)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    better = [[_pq(np.asarray(ref[0][0].ap) + 0.05 + 0.1 * rng.random(80))]]
    iv = paired_bootstrap_difference(better, ref, "mAP", n_boot=1000)
    assert iv.mean == pytest.approx(better[0][0].mAP - ref[0][0].mAP)
    assert 0.05 < iv.low < iv.mean < iv.high < 0.15
    # pairing removes the between-query spread an unpaired comparison would carry
    unpaired = bootstrap_interval(better[0], "mAP", n_boot=1000).half_width + bootstrap_interval(ref[0], "mAP", n_boot=1000).half_width
    assert iv.half_width < unpaired / 3
    with pytest.raises(EvaluationError, match="split 0: reference run 0 has 79 valid queries but run 0 has 80"):
        paired_bootstrap_difference(better, [[_pq(rng.random(79))]], "mAP")


def test_runs_on_different_queries_are_refused():
    a = PerQuery(ap=[0.5, 0.7], inp=[0.5, 0.7], first_match=[0, 1], queries=["q/1.jpg", "q/2.jpg"])
    b = PerQuery(ap=[0.5, 0.7], inp=[0.5, 0.7], first_match=[0, 1], queries=["q/1.jpg", "q/3.jpg"])
    with pytest.raises(EvaluationError, match=r"split 0: reference run 0 and run 0 rank different queries .*'q/3.jpg' vs 'q/2.jpg'"):
        paired_bootstrap_difference([[a]], [[b]], "mAP")


# --------------------------------------------------------------------------------------
# per-query values and their file


def test_evaluate_fills_per_query_inp():
    res = evaluate(**_problem(0))
    valid = res.first_match >= 0
    assert res.inp.shape == (res.num_queries,) and np.isnan(res.inp[~valid]).all()
    assert 0 < res.num_valid_queries < res.num_queries
    assert res.mINP == float(np.mean(res.inp[valid]))
    assert np.all(res.inp[valid] <= 1.0) and np.all(res.inp[valid] > 0.0)


def test_per_query_round_trip_reproduces_evaluate(tmp_path):
    single = evaluate(**_problem(0))
    multi = evaluate_splits([_problem(s, nq=25 + s) for s in (1, 2, 3)])
    queries = {"market": [[f"q/{i:03d}.jpg" for i in range(single.num_queries)]]}
    path = save_per_query(tmp_path / "per_query.npz", {"market": [single], "viper": multi.results}, queries=queries)
    loaded = load_per_query(path)
    assert list(loaded) == ["market", "viper"] and [len(v) for v in loaded.values()] == [1, 3]
    for res, pq in zip([single, *multi.results], [*loaded["market"], *loaded["viper"]]):
        assert (pq.mAP, pq.rank1, pq.mINP) == (res.mAP, res.rank1, res.mINP)  # exactly
        np.testing.assert_array_equal(pq.first_match, res.first_match)
        np.testing.assert_array_equal(pq.ap, res.ap)
        assert pq.num_valid_queries == res.num_valid_queries
    assert loaded["market"][0].queries == tuple(queries["market"][0]) and loaded["viper"][0].queries is None
    # the multi-split number is the mean over splits, as reported
    iv = bootstrap_interval(loaded["viper"], "rank1", n_boot=100)
    assert iv.mean == multi.rank1
    # a MultiSplitResult and PerQuery objects are accepted too
    again = load_per_query(save_per_query(tmp_path / "again.npz", {"viper": multi, "market": loaded["market"]}))
    assert again["viper"][2].mAP == multi.results[2].mAP and again["market"][0].queries == loaded["market"][0].queries


def test_save_per_query_refuses_bad_inputs(tmp_path):
    res = evaluate(**_problem(0))
    hand_made = EvalResult(cmc=np.array([0.5]), mAP=0.4, mINP=0.2, num_valid_queries=4, num_queries=4, num_gallery=9)
    with pytest.raises(EvaluationError, match="target 'market', split 0: the result has no per-query ap, inp, first_match values"):
        save_per_query(tmp_path / "p.npz", {"market": [hand_made]})
    with pytest.raises(EvaluationError, match="3 query paths for 40 queries"):
        save_per_query(tmp_path / "p.npz", {"market": [res]}, queries={"market": [["a", "b", "c"]]})
    with pytest.raises(EvaluationError, match=r"unknown targets \['duke'\]"):
        save_per_query(tmp_path / "p.npz", {"market": [res]}, queries={"duke": [["a"]]})
    with pytest.raises(EvaluationError, match="per-query files are .npz"):
        save_per_query(tmp_path / "p.json", {"market": [res]})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_load_per_query_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(EvaluationError, match="per-query file not found: .*nope.npz") as exc:
        load_per_query(tmp_path / "nope.npz")
    assert isinstance(exc.value, MuvaError)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(EvaluationError, match="bad.npz: not a readable per-query .npz file"):
        load_per_query(bad)
    good = save_per_query(tmp_path / "good.npz", {"market": [evaluate(**_problem(0))]})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(EvaluationError, match="truncated.npz: not a readable per-query .npz file"):
        load_per_query(truncated)
    features = tmp_path / "features.npz"
    np.savez(features, features=np.zeros((2, 3)), pids=np.arange(2))
    with pytest.raises(EvaluationError, match="features.npz: not a per-query file of format 1 \\(no format version\\)"):
        load_per_query(features)
    partial = tmp_path / "partial.npz"
    np.savez(partial, muva_per_query=np.asarray(1), **{"market/0/ap": np.zeros(2), "market/0/first_match": np.zeros(2, int)})
    with pytest.raises(EvaluationError, match="target 'market', split 0 lacks inp"):
        load_per_query(partial)
