"""Evaluation engine benchmark: muva.evaluation vs the classic evaluator every toolbox copies.

Identity-structured synthetic features (per identity a random unit-vector centre plus
noise and a per-camera shift, renormalised; distractors with identity 0 in the gallery)
at Market size (3,368 × 15,913, 751 ids, 6 cameras, 2048-d) and MSMT17 size
(11,659 × 82,161, 3,060 ids, 15 cameras).  Every case runs in its own subprocess, which
reports its wall time and its peak resident memory (``ru_maxrss``, features included).

The baseline ("peer") is a faithful NumPy re-implementation of the classic evaluator:
full distance matrix, full argsort, int32 match matrix, per-query Python loop; and of
the classic dense k-reciprocal re-ranking.  They run only at Market size (they need
~19 GB / ~9 GB; figures of torchreid's Cython evaluator, measured once on a 2-core CPU,
are quoted for the rest).

    python benchmarks/bench_eval.py                    # Market-size evaluation cases
    python benchmarks/bench_eval.py --rerank           # + re-ranking at Market size (ours)
    python benchmarks/bench_eval.py --peer-rerank      # + the dense peer re-ranking (~9 GB!)
    python benchmarks/bench_eval.py --msmt             # + MSMT17-size evaluation (checks free memory)
    python benchmarks/bench_eval.py --msmt-rerank      # + MSMT17-size sparse re-ranking
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {
    "market": dict(nq=3368, ng=15913, ids=751, cams=6, distractors=2798),
    "msmt": dict(nq=11659, ng=82161, ids=3060, cams=15, distractors=0),
}
# torchreid's Cython evaluator, measured once on a 2-core CPU (quoted, not re-run here)
QUOTED = {
    ("market", "peer-cython"): dict(wall=10.8, dist=2.4, rank=5.3, rss=1.56),
    ("msmt", "peer-cython"): dict(wall=178.0, dist=47.0, rank=123.0, rss=19.2),
    ("market", "peer-rerank"): dict(wall=141.0, rss=8.8),
}


# ----------------------------------------------------------------------------------------
# synthetic data


def generate(size: str, out: Path, dim: int = 2048, seed: int = 0, noise: float = 3.3, cam_shift: float = 0.5) -> Path:
    """Write ``{q,g}_feats.npy`` (float32, unit norm) and ``{q,g}_{pids,cams}.npy`` under ``out``."""
    cfg = SIZES[size]
    out.mkdir(parents=True, exist_ok=True)
    if (out / "done").exists():
        return out
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(cfg["ids"] + 1, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cam_vec = rng.normal(size=(cfg["cams"], dim)).astype(np.float32)
    cam_vec /= np.linalg.norm(cam_vec, axis=1, keepdims=True)
    q_pids = rng.integers(1, cfg["ids"] + 1, cfg["nq"])
    ng_id = cfg["ng"] - cfg["distractors"]
    g_pids = np.concatenate([rng.permutation(np.resize(np.arange(1, cfg["ids"] + 1), ng_id)), np.zeros(cfg["distractors"], int)])
    q_cams = rng.integers(0, cfg["cams"], cfg["nq"])
    g_cams = rng.integers(0, cfg["cams"], cfg["ng"])

    def feats(pids, cams, name):
        arr = np.lib.format.open_memmap(out / f"{name}_feats.npy", mode="w+", dtype=np.float32, shape=(len(pids), dim))
        for a in range(0, len(pids), 4096):
            p, c = pids[a : a + 4096], cams[a : a + 4096]
            base = centres[p].copy()
            dis = p == 0  # distractors: each its own random centre
            base[dis] = rng.normal(size=(int(dis.sum()), dim)).astype(np.float32) / np.sqrt(dim)
            x = base + cam_shift * cam_vec[c] + noise * rng.normal(size=(len(p), dim)).astype(np.float32) / np.sqrt(dim)
            arr[a : a + 4096] = x / np.linalg.norm(x, axis=1, keepdims=True)
        arr.flush()
        del arr

    feats(q_pids, q_cams, "q")
    feats(g_pids, g_cams, "g")
    for name, v in (("q_pids", q_pids), ("g_pids", g_pids), ("q_cams", q_cams), ("g_cams", g_cams)):
        np.save(out / f"{name}.npy", v)
    (out / "done").write_text("ok")
    return out


def load(data: Path):
    return (np.load(data / "q_feats.npy"), np.load(data / "g_feats.npy"), np.load(data / "q_pids.npy"),
            np.load(data / "g_pids.npy"), np.load(data / "q_cams.npy"), np.load(data / "g_cams.npy"))


# ----------------------------------------------------------------------------------------
# the classic evaluator and re-ranking (NumPy re-implementations of what the peers run)


def peer_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, all_INP = [], [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        pos = np.where(raw_cmc == 1)[0]
        all_INP.append(cmc[pos.max()] / (pos.max() + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0) * raw_cmc
        all_AP.append(tmp.sum() / raw_cmc.sum())
    cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_cmc)
    return cmc, float(np.mean(all_AP)), float(np.mean(all_INP))


def peer_rerank(q_g, q_q, g_g, k1=20, k2=6, lam=0.3):
    nq = q_g.shape[0]
    original = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    V = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    n = original.shape[0]
    kh = int(np.around(k1 / 2.0))
    for i in range(n):
        fwd = initial_rank[i, : k1 + 1]
        R = fwd[np.where(initial_rank[fwd, : k1 + 1] == i)[0]]
        exp = R
        for c in R:
            cf = initial_rank[c, : kh + 1]
            Rc = cf[np.where(initial_rank[cf, : kh + 1] == c)[0]]
            if len(np.intersect1d(Rc, R)) > 2.0 / 3 * len(Rc):
                exp = np.append(exp, Rc)
        exp = np.unique(exp)
        w = np.exp(-original[i, exp])
        V[i, exp] = w / np.sum(w)
    original = original[:nq]
    if k2 != 1:
        Vqe = np.zeros_like(V, dtype=np.float32)
        for i in range(n):
            Vqe[i] = np.mean(V[initial_rank[i, :k2]], axis=0)
        V = Vqe
        del Vqe
    del initial_rank
    inv = [np.where(V[:, i] != 0)[0] for i in range(n)]
    jac = np.zeros_like(original, dtype=np.float32)
    for i in range(nq):
        tmin = np.zeros((1, n), dtype=np.float32)
        nz = np.where(V[i] != 0)[0]
        for j in nz:
            tmin[0, inv[j]] += np.minimum(V[i, j], V[inv[j], j])
        jac[i] = 1 - tmin / (2.0 - tmin)
    final = jac * (1 - lam) + original * lam
    return final[:, nq:]


# ----------------------------------------------------------------------------------------
# cases (each runs in a subprocess)


def case(name: str, data: Path) -> dict:
    q, g, qp, gp, qc, gc = load(data)
    t0 = time.perf_counter()
    out: dict = {}
    if name == "peer":
        d = 1.0 - q @ g.T
        t1 = time.perf_counter()
        cmc, mAP, mINP = peer_eval(d, qp, gp, qc, gc)
        out.update(dist=t1 - t0, rank=time.perf_counter() - t1, mAP=mAP, r1=float(cmc[0]), mINP=mINP)
    elif name == "ours":
        from muva.evaluation import evaluate

        r = evaluate(q, g, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc)
        out.update(dist=r.info["seconds_distances"], rank=r.info["seconds_ranking"], mAP=r.mAP, r1=r.rank1, mINP=r.mINP)
    elif name == "peer-rerank":
        final = peer_rerank(1.0 - q @ g.T, 1.0 - q @ q.T, 1.0 - g @ g.T)
        cmc, mAP, mINP = peer_eval(final, qp, gp, qc, gc)
        out.update(mAP=mAP, r1=float(cmc[0]), mINP=mINP)
    elif name.startswith("ours-rerank-"):
        from muva.evaluation import evaluate

        r = evaluate(q, g, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, rerank=name.split("-")[-1])
        out.update(mAP=r.mAP, r1=r.rank1, mINP=r.mINP)
    else:
        raise SystemExit(f"unknown case {name}")
    out["wall"] = time.perf_counter() - t0
    out["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss is KiB)
    return out


def run_case(name: str, data: Path, timeout: int = 3600) -> dict:
    cmd = [sys.executable, __file__, "--case", name, "--data", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall"] = time.perf_counter() - t0
    return res


def free_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "muva_bench_eval")
    ap.add_argument("--rerank", action="store_true")
    ap.add_argument("--peer-rerank", action="store_true")
    ap.add_argument("--msmt", action="store_true")
    ap.add_argument("--msmt-rerank", action="store_true")
    ap.add_argument("--skip-peer", action="store_true", help="do not run the dense peer evaluator at Market size")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.data)))
        return

    print(f"load average: {os.getloadavg()}, available memory {free_gib():.1f} GiB, cores {os.cpu_count()}")
    rows = []
    market = generate("market", args.workdir / "market")
    if not args.skip_peer:
        rows.append(("market", "peer (NumPy classic, this run)", run_case("peer", market)))
    rows.append(("market", "muva evaluate", run_case("ours", market)))
    if args.rerank or args.peer_rerank:
        for mode in ("exact", "sparse"):
            rows.append(("market", f"muva rerank={mode}", run_case(f"ours-rerank-{mode}", market)))
    if args.peer_rerank:
        if free_gib() < 14:
            print(f"skipping the dense peer re-ranking: only {free_gib():.1f} GiB available (needs ~9 GiB + headroom)")
        else:
            rows.append(("market", "peer rerank (NumPy classic, this run)", run_case("peer-rerank", market)))
    if args.msmt or args.msmt_rerank:
        msmt = generate("msmt", args.workdir / "msmt")
        if free_gib() < 6:
            print(f"skipping MSMT17 size: only {free_gib():.1f} GiB available")
        else:
            if args.msmt:
                rows.append(("msmt", "muva evaluate", run_case("ours", msmt)))
            if args.msmt_rerank:
                rows.append(("msmt", "muva rerank=sparse", run_case("ours-rerank-sparse", msmt)))
    print(f"load average after: {os.getloadavg()}")

    peer = {size: r for size, name, r in rows if name.startswith("peer (")}
    peer_rr = {size: r for size, name, r in rows if name.startswith("peer rerank")}
    print()
    print("| size | case | wall s | distances s | ranking s | peak RSS GiB | mAP | R1 | speed-up vs peer (this run) "
          "| speed-up vs issue's peer figure | ranking speed-up vs issue | RSS vs issue |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, name, r in rows:
        if "error" in r:
            print(f"| {size} | {name} | error: {r['error']} |")
            continue
        is_rr = "rerank" in name
        base = (peer_rr if is_rr else peer).get(size)
        quoted = QUOTED.get((size, "peer-rerank" if is_rr else "peer-cython"))
        same_run = f"{base['wall'] / r['wall']:.1f}×" if base and base is not r else "–"
        vs_q = f"{quoted['wall'] / r['wall']:.1f}×" if quoted and not name.startswith("peer") else "–"
        rank_q = f"{quoted['rank'] / r['rank']:.1f}×" if quoted and "rank" in quoted and r.get("rank") and not name.startswith("peer") else "–"
        rss_q = f"{r['rss'] / quoted['rss']:.2f}" if quoted and not name.startswith("peer") else "–"
        print(f"| {size} | {name} | {r['wall']:.1f} | {fmt(r.get('dist'))} | {fmt(r.get('rank'))} | {r['rss']:.2f} | "
              f"{100 * r['mAP']:.2f} | {100 * r['r1']:.2f} | {same_run} | {vs_q} | {rank_q} | {rss_q} |")
    print()
    print("quoted Cython-evaluator figures (2-core CPU): Market Cython 10.8 s (2.4 s distances + 5.3 s ranking), 1.56 GB; "
          "MSMT17 Cython 178 s (47 + 123 s), 19.2 GB; Market re-ranking 141 s, 8.8 GB.")
    same = [(s, n, r) for s, n, r in rows if "error" not in r and not n.startswith("peer")]
    for size, name, r in same:
        base = (peer_rr if "rerank" in name else peer).get(size)
        if base and "error" not in base and "mAP" in base:
            print(f"{size} {name}: |ΔmAP| vs peer = {abs(r['mAP'] - base['mAP']):.2e}, |ΔR1| = {abs(r['r1'] - base['r1']):.2e}")


if __name__ == "__main__":
    main()
