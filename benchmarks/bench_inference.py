"""Inference benchmarks (CPU): data path overhead, ONNX Runtime vs PyTorch, faiss search.

Sections (``--only model,onnx,faiss``; all by default), each measured against a
baseline in the same run:

* ``model``: the full ViT-B/16 MUVA (3 parts, random weights — speed does not depend
  on the values) at 256×128.  Baseline: ``model.extract`` on preloaded, preprocessed
  tensors.  Measured: ``FeatureExtractor.extract_files`` from JPEG files on disk
  (Market-sized 128×64 crops, so decoding *and* resizing are included), decoding in a
  DataLoader worker while the model runs.  Target: the data path adds ≤ 10 %.
* ``onnx``: the same model exported with ``muva.inference.export_onnx``; ONNX Runtime
  vs PyTorch throughput on the same preloaded batch (target ≥ 1.2×), plus the parity
  check (max |ONNX − PyTorch| ≤ 1e-4) on the full config.
* ``faiss``: 1M random unit vectors (default 256-d, so that the benchmark stays under
  ~4 GB; 2048-d would need 8.2 GB for the vectors alone), drawn as 100k random
  "identities" × 10 noisy samples (cosine ≈ 0.8 to their centre, like re-ID features;
  ``--data gaussian`` for structure-free vectors, the worst case for any ANN index):
  latency of exact search (flat inner product) vs IVF and HNSW, and their recall@10
  against the exact top-10.

Timings: the extraction section reports the minimum (least disturbed) and the median
of ``--repeats`` interleaved rounds, the others medians; the load average is printed
because other processes may share the CPU.

    python benchmarks/bench_inference.py --only model,onnx --images 48
    python benchmarks/bench_inference.py --only faiss --n 1000000 --dim 256
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |")
    sys.stdout.flush()


def build_full_model():
    import torch

    from muva.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="none"), num_classes=0).eval()
    for m in model.modules():  # give the BN neck trained-looking statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


def bench_model(model, args, results: dict) -> None:
    import torch
    from PIL import Image

    from muva.inference import FeatureExtractor

    tmp = Path(tempfile.mkdtemp(prefix="muva-bench-"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        img = np.kron(rng.integers(0, 256, (8, 4, 3)), np.ones((16, 16, 1))) + rng.normal(0, 10, (128, 64, 3))
        p = tmp / f"{i // 4:04d}_c{i % 4 + 1}s1_{i:06d}_00.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(str(p))
    fx = FeatureExtractor(model, batch_size=args.batch, num_workers=1)
    pre = torch.from_numpy(np.stack([fx.preprocess.path(p) for p in paths]))
    batches = list(pre.split(args.batch))

    def bare():
        with torch.inference_mode():
            return torch.cat([model.extract(b) for b in batches])

    def files():
        return fx.extract_files(paths, progress=False).features

    ref = bare().numpy()
    got = files()
    assert np.abs(ref - got).max() < 1e-4, "FeatureExtractor and bare forward disagree"
    t_bare, t_files = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter(); bare(); t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); files(); t_files.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in paths:
        fx.preprocess.path(p)
    decode = time.perf_counter() - t0
    # Other processes share this CPU, so each round times both paths back to back and
    # the verdict uses the median of the per-round ratios (paired under similar load).
    b, f = statistics.median(t_bare), statistics.median(t_files)
    ratio = statistics.median(tf / tb for tf, tb in zip(t_files, t_bare))
    n = args.images
    table(
        f"Extraction, full ViT-B/16 MUVA 256×128, {n} images, batch {args.batch}, {args.repeats} rounds (load avg {load_avg()})",
        ["path", "median s", "min s", "images/s (median)", "vs bare forward (median of per-round ratios)"],
        [["bare model.extract on preloaded tensors", f"{b:.2f}", f"{min(t_bare):.2f}", f"{n / b:.2f}", "1.00×"],
         ["FeatureExtractor from JPEG files", f"{f:.2f}", f"{min(t_files):.2f}", f"{n / f:.2f}", f"{ratio:.3f}× ({100 * (ratio - 1):+.1f} %)"],
         ["decode + resize + normalise alone, serial", f"{decode:.2f}", "", f"{n / decode:.0f}", f"{decode / b:.3f}× of the forward"]],
    )
    print("per-round ratios: " + ", ".join(f"{tf / tb:.3f}" for tf, tb in zip(t_files, t_bare)))
    results["data_path_overhead"] = ratio - 1


def bench_onnx(model, args, results: dict) -> None:
    import onnxruntime as ort
    import torch

    from muva.inference.export import check_onnx_parity, export_onnx

    tmp = Path(tempfile.mkdtemp(prefix="muva-onnx-"))
    t0 = time.perf_counter()
    report = export_onnx(model, tmp / "muva_vitb16.onnx", check=False)
    export_s = time.perf_counter() - t0
    parity = check_onnx_parity(model, report.path, batch=3, seed=1)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(report.path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = torch.rand(args.batch, 3, 256, 128) * 2 - 1
    xn = x.numpy()

    def run_torch():
        with torch.inference_mode():
            return model.extract(x)

    def run_ort():
        return sess.run(["features"], {"images": xn})[0]

    q8 = export_onnx(model, tmp / "muva_vitb16_int8.onnx", check=False, quantize="int8")
    parity8 = check_onnx_parity(model, q8.path, batch=args.batch, seed=2)
    sess8 = ort.InferenceSession(str(q8.path), sess_options=opts, providers=["CPUExecutionProvider"])

    def run_ort8():
        return sess8.run(["features"], {"images": xn})[0]

    run_torch(); run_ort(); run_ort8()  # warm-up
    t_t, t_o, t_8 = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter(); run_torch(); t_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); run_ort(); t_o.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); run_ort8(); t_8.append(time.perf_counter() - t0)
    tt, to, t8 = statistics.median(t_t), statistics.median(t_o), statistics.median(t_8)
    table(
        f"ONNX Runtime {ort.__version__} vs PyTorch, full ViT-B/16 MUVA, batch {args.batch} (load avg {load_avg()})",
        ["runtime", "median s / batch", "images/s", "speed vs PyTorch", "features vs PyTorch"],
        [["PyTorch (model.extract)", f"{tt:.2f}", f"{args.batch / tt:.2f}", "1.00×", "—"],
         ["ONNX Runtime float32 (features + masks graph)", f"{to:.2f}", f"{args.batch / to:.2f}", f"{tt / to:.2f}×",
          f"max abs diff {parity['features_max_abs_diff']:.1e}"],
         ["ONNX Runtime int8 dynamic (--quantize int8)", f"{t8:.2f}", f"{args.batch / t8:.2f}", f"{tt / t8:.2f}×",
          f"min cosine {parity8['features_min_cosine']:.4f} (random weights)"]],
    )
    results["onnx_int8_speedup"] = tt / t8
    table(
        "ONNX parity, full config (random weights, batch 3 ≠ traced batch 2)",
        ["check", "value"],
        [["max abs diff, features (ONNX vs PyTorch)", f"{parity['features_max_abs_diff']:.2e}"],
         ["max abs diff, mask probabilities", f"{parity.get('masks_max_abs_diff', float('nan')):.2e}"],
         ["thresholded mask decisions that differ", parity.get("masks_flipped_decisions", 0)],
         ["export time (s) / file size (MB)", f"{export_s:.1f} / {report.file_bytes / 1e6:.0f}"]],
    )
    results["onnx_speedup"] = tt / to
    results["onnx_parity"] = parity["features_max_abs_diff"]


def make_vectors(n: int, dim: int, kind: str, seed: int, identities: int | None = None, chunk: int = 100_000):
    """n unit vectors; 'clustered' = n/10 random identity centres + noise (cosine to centre ≈ 0.8)."""
    identities = identities or max(1, n // 10)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    centres = rng.standard_normal((identities, dim), dtype=np.float32) if kind == "clustered" else None
    if centres is not None:
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        if centres is not None:
            noise *= 0.75 / np.sqrt(dim)
            noise += centres[rng.integers(0, identities, m)]
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        out[s : s + m] = noise
    return out, centres


def bench_faiss(args, results: dict) -> None:
    import faiss

    from muva.inference.search import GalleryIndex, bytes_per_vector

    t0 = time.perf_counter()
    g, centres = make_vectors(args.n, args.dim, args.data, seed=0, identities=args.n // args.per_identity)
    if centres is not None:  # queries: fresh samples of gallery identities
        q, _ = make_vectors(args.queries, args.dim, "gaussian", seed=1)
        rng = np.random.default_rng(2)
        q = centres[rng.integers(0, len(centres), args.queries)] + 0.75 * q  # same noise norm as the gallery
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    else:
        q, _ = make_vectors(args.queries, args.dim, "gaussian", seed=1)
    print(f"\n{args.n:,} × {args.dim}-d {args.data} vectors made in {time.perf_counter() - t0:.1f} s "
          f"({g.nbytes / 2**30:.2f} GiB); faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, load avg {load_avg()}")
    names = np.arange(args.n).astype(str).tolist()
    rows = []
    truth = None
    configs = [("flat", {}, [{}])]
    configs.append(("ivf", {"nlist": args.nlist}, [{"nprobe": p} for p in (16, 64, 256)]))
    configs.append(("hnsw", {"m": 32, "ef_construction": args.ef_construction}, [{"ef_search": e} for e in (64, 128)]))
    configs.append(("ivf-sq8", {"nlist": args.nlist}, [{"nprobe": 64}]))
    base_single = base_batch = None
    for kind, build_kw, search_kws in configs:
        if kind not in args.kinds:
            continue
        t0 = time.perf_counter()
        idx = GalleryIndex.build(g, names, kind=kind, progress=False, **build_kw)
        build_s = time.perf_counter() - t0
        for skw in search_kws:
            idx.set_search_params(**skw)
            idx.search(q[:10], k=10)  # warm-up
            t0 = time.perf_counter()
            res = idx.search(q, k=10)
            batch_ms = 1000 * (time.perf_counter() - t0) / len(q)
            singles = []
            for i in range(min(50, len(q))):
                t0 = time.perf_counter()
                idx.search(q[i : i + 1], k=10)
                singles.append(1000 * (time.perf_counter() - t0))
            single_ms = statistics.median(singles)
            if kind == "flat":
                truth = res.indices
                base_single, base_batch = single_ms, batch_ms
                recall = 1.0
            else:
                recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.indices, truth)])) if truth is not None else float("nan")
            label = idx.info["factory"] + ("".join(f" {k}={v}" for k, v in skw.items()))
            rows.append([label, f"{build_s:.1f}", f"{single_ms:.2f}", f"{batch_ms:.3f}",
                         f"{base_single / single_ms:.1f}×" if base_single else "", f"{recall:.3f}",
                         f"{bytes_per_vector(idx.info['factory'], args.dim):,.0f}"])
            results[f"faiss {label}"] = {"recall@10": recall, "single_ms": single_ms}
        del idx
    table(
        f"faiss search, {args.n:,} × {args.dim}-d ({args.data}), {len(q)} queries, top-10 (load avg {load_avg()})",
        ["index", "build s", "ms/query (1 at a time)", "ms/query (batched)", "speed vs exact", "recall@10 vs exact", "bytes/vector"],
        rows,
    )
    print(f"\nAt 2048-d the same indexes need {bytes_per_vector('Flat', 2048):,.0f} (flat), "
          f"{bytes_per_vector(f'IVF{args.nlist},SQ8', 2048):,.0f} (ivf-sq8) and "
          f"{bytes_per_vector('HNSW32,Flat', 2048):,.0f} (hnsw) bytes per vector: 1M → "
          f"{bytes_per_vector('Flat', 2048) / 1e3:.1f} / {bytes_per_vector(f'IVF{args.nlist},SQ8', 2048) / 1e3:.1f} / "
          f"{bytes_per_vector('HNSW32,Flat', 2048) / 1e3:.1f} GB.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="model,onnx,faiss")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--per-identity", type=int, default=10, help="clustered data: vectors per identity")
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--data", choices=("clustered", "gaussian"), default="clustered")
    ap.add_argument("--kinds", default="flat,ivf,hnsw,ivf-sq8")
    args = ap.parse_args()
    args.kinds = args.kinds.split(",")
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    import torch

    print(f"muva inference benchmark — torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load avg {load_avg()}")
    only = set(args.only.split(","))
    results: dict = {}
    if only & {"model", "onnx"}:
        t0 = time.perf_counter()
        model = build_full_model()
        print(f"full model built in {time.perf_counter() - t0:.1f} s ({sum(p.numel() for p in model.visual.parameters()) / 1e6:.1f} M visual parameters)")
        if "model" in only:
            bench_model(model, args, results)
        if "onnx" in only:
            bench_onnx(model, args, results)
        del model
    if "faiss" in only:
        bench_faiss(args, results)
    print("\n## Closing note\n")
    if "data_path_overhead" in results:
        v = results["data_path_overhead"]
        print(f"- data path overhead: {100 * v:+.1f} % (target ≤ +10 %): {'met' if v <= 0.10 else 'NOT met'}")
    if "onnx_speedup" in results:
        v = results["onnx_speedup"]
        print(f"- ONNX Runtime float32 speed: {v:.2f}× PyTorch (target ≥ 1.2×): {'met' if v >= 1.2 else 'NOT met'}")
        print(f"- ONNX Runtime int8 speed: {results['onnx_int8_speedup']:.2f}× PyTorch (not bit-comparable; see cosine)")
        print(f"- ONNX parity (full config): {results['onnx_parity']:.2e} (target ≤ 1e-4): {'met' if results['onnx_parity'] <= 1e-4 else 'NOT met'}")
    for k, v in results.items():
        if k.startswith("faiss"):
            print(f"- {k}: recall@10 {v['recall@10']:.3f}, {v['single_ms']:.2f} ms/query")
    print(f"- load average at the end: {load_avg()}")


if __name__ == "__main__":
    main()
