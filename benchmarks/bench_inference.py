"""Inference benchmarks (CPU): data path overhead, ONNX Runtime vs PyTorch, faiss search.

Sections (``--only model,onnx,faiss``; all by default), each measured against a
baseline in the same run:

* ``model``: the full ViT-B/16 MUVA (3 parts, random weights — speed does not depend
  on the values) at 256×128.  Baseline: ``model.extract`` on preloaded, preprocessed
  tensors.  Measured: ``FeatureExtractor.extract_files`` from JPEG files on disk
  (Market-sized 128×64 crops, so decoding *and* resizing are included), decoding in a
  DataLoader worker while the model runs.  Target: the data path adds ≤ 10 %.
* ``onnx``: the same model exported with ``muva.inference.export_onnx`` (float32, and
  ``quantize="int8"``); ONNX Runtime vs PyTorch throughput on the same preloaded batches
  (``--onnx-batches``, target ≥ 1.2×), timed in paired rounds of blocks with pauses
  between them (spinning worker threads of the runtime just timed would otherwise slow
  the next).  PyTorch is timed twice: with glibc's stock malloc, then after
  :func:`muva.utils.memory.retain_freed_memory` (what the muva CLI applies).  Plus the
  parity check (max |ONNX − PyTorch| ≤ 1e-4) on the full config.
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


def timed_block(fn, calls: int, pause: float) -> float:
    """Best of ``calls`` timed calls after one untimed call, then a pause.

    The pause lets the runtime just measured go quiet before the next one starts: ONNX
    Runtime's and OpenMP's worker threads spin for a while after each call, and with
    two cores they would steal time from whatever runs next.
    """
    fn()
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    time.sleep(pause)
    return best


def bench_onnx(model, args, results: dict) -> None:
    import onnxruntime as ort
    import torch

    from muva.inference.export import check_onnx_parity, export_onnx
    from muva.utils.memory import retain_freed_memory

    tmp = Path(tempfile.mkdtemp(prefix="muva-onnx-"))
    t0 = time.perf_counter()
    report = export_onnx(model, tmp / "muva_vitb16.onnx", check=False)
    export_s = time.perf_counter() - t0
    parity = check_onnx_parity(model, report.path, batch=3, seed=1)
    q8 = export_onnx(model, tmp / "muva_vitb16_int8.onnx", check=False, quantize="int8")
    parity8 = check_onnx_parity(model, q8.path, batch=args.batch, seed=2)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = {name: ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            for name, path in (("fp32", report.path), ("int8", q8.path))}
    batches = sorted({int(b) for b in args.onnx_batches.split(",")})
    inputs = {b: torch.rand(b, 3, 256, 128, generator=torch.Generator().manual_seed(b)) * 2 - 1 for b in batches}

    def torch_fn(b):
        def run():
            with torch.inference_mode():
                return model.extract(inputs[b])
        return run

    def ort_fn(name, b):
        xn = inputs[b].numpy()
        return lambda: sess[name].run(["features"], {"images": xn})[0]

    # Two phases in one process: PyTorch first as it comes (glibc hands every freed
    # activation back to the kernel and page-faults it in again on the next batch),
    # then after muva.utils.memory.retain_freed_memory(), which the muva CLI applies.
    # ONNX Runtime (its own arena) is timed in both phases, paired round by round.
    rows, ratio = [], {}
    for phase in ("stock", "tuned"):
        if phase == "tuned":
            retain_freed_memory()
        for b in batches:
            calls = max(2, 16 // b)
            per = {"torch": [], "fp32": [], "int8": []}
            for _ in range(args.repeats):
                per["torch"].append(timed_block(torch_fn(b), calls, args.pause))
                per["fp32"].append(timed_block(ort_fn("fp32", b), calls, args.pause))
                per["int8"].append(timed_block(ort_fn("int8", b), calls, args.pause))
            tt = statistics.median(per["torch"])
            label = "PyTorch, stock glibc malloc" if phase == "stock" else "PyTorch, retain_freed_memory()"
            rows.append([label, b, f"{tt:.3f}", f"{b / tt:.2f}", "1.00×", ""])
            for name in ("fp32", "int8"):
                r = statistics.median(t / o for t, o in zip(per["torch"], per[name]))
                ratio[(phase, name, b)] = r
                to = statistics.median(per[name])
                rows.append([f"  ONNX Runtime {'float32' if name == 'fp32' else 'int8 dynamic'}", b, f"{to:.3f}", f"{b / to:.2f}",
                             f"{r:.2f}×", " ".join(f"{t / o:.2f}" for t, o in zip(per["torch"], per[name]))])
    table(
        f"ONNX Runtime {ort.__version__} vs PyTorch {torch.__version__}, full ViT-B/16 MUVA 256×128, "
        f"{torch.get_num_threads()} threads, {args.repeats} paired rounds (load avg {load_avg()})",
        ["runtime", "batch", "best s / batch (median of rounds)", "images/s", "speed vs PyTorch (median of per-round ratios)", "per-round ratios"],
        rows,
    )
    table(
        "ONNX parity, full config (random weights)",
        ["check", "value"],
        [["float32: max abs diff, features (batch 3 ≠ traced batch 2)", f"{parity['features_max_abs_diff']:.2e}"],
         ["float32: max abs diff, mask probabilities", f"{parity.get('masks_max_abs_diff', float('nan')):.2e}"],
         ["float32: thresholded mask decisions that differ", parity.get("masks_flipped_decisions", 0)],
         [f"int8: lowest feature cosine to PyTorch (batch {args.batch})",
          f"{parity8['features_min_cosine']:.5f}"],
         ["int8: thresholded mask decisions that differ", f"{parity8.get('masks_flipped_decisions', 0)}"],
         ["export time (s) / file size float32, int8 (MB)", f"{export_s:.1f} / {report.file_bytes / 1e6:.0f}, {q8.file_bytes / 1e6:.0f}"]],
    )
    b = args.batch if args.batch in batches else batches[-1]
    results["onnx_batch"] = b
    results["onnx_speedup"] = ratio[("stock", "fp32", b)]
    results["onnx_speedup_tuned"] = ratio[("tuned", "fp32", b)]
    results["onnx_int8_speedup"] = ratio[("stock", "int8", b)]
    results["onnx_int8_speedup_tuned"] = ratio[("tuned", "int8", b)]
    results["onnx_parity"] = parity["features_max_abs_diff"]
    results["onnx_int8_cosine"] = parity8["features_min_cosine"]


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
    ap.add_argument("--onnx-batches", default="1,16", help="batch sizes of the ONNX section")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between timed blocks (lets spinning threads settle)")
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
        v, vt = results["onnx_speedup"], results["onnx_speedup_tuned"]
        b = results["onnx_batch"]
        print(f"- ONNX Runtime float32 speed at batch {b}: {v:.2f}× stock PyTorch (target ≥ 1.2×): {'met' if v >= 1.2 else 'NOT met'}; "
              f"{vt:.2f}× PyTorch with retain_freed_memory() (as the muva CLI runs it)")
        v8 = min(results["onnx_int8_speedup"], results["onnx_int8_speedup_tuned"])
        print(f"- ONNX Runtime int8 (--quantize int8) speed at batch {b}: {results['onnx_int8_speedup']:.2f}× stock PyTorch, "
              f"{results['onnx_int8_speedup_tuned']:.2f}× tuned (target ≥ 1.2×): {'met' if v8 >= 1.2 else 'NOT met'}; "
              f"features not bit-equal: lowest cosine to PyTorch {results['onnx_int8_cosine']:.5f}")
        print(f"- ONNX parity (full config): {results['onnx_parity']:.2e} (target ≤ 1e-4): {'met' if results['onnx_parity'] <= 1e-4 else 'NOT met'}")
    for k, v in results.items():
        if k.startswith("faiss"):
            print(f"- {k}: recall@10 {v['recall@10']:.3f}, {v['single_ms']:.2f} ms/query")
    print(f"- load average at the end: {load_avg()}")


if __name__ == "__main__":
    main()
