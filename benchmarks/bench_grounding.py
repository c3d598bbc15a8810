"""Grounding benchmark: pose-expert throughput and success rate, IoU vs synthetic ground truth.

Throughput (crops/s) on real crops (a mini MARS copy under ``$MUVA_SHARED_DATA/mini_mars``; drawn stand-ins when it
is absent), every row measured in this run, with ratios against the baseline row:

* ``litert invoke only`` (baseline) — the BlazePose landmark model alone on pre-made
  256×256 tensors: the ceiling of any pipeline built on it;
* ``pose expert`` — decode + letterbox + model + keypoints → boxes + validation;
* ``muva ground run (pose)`` — the whole command path: the above plus threaded decoding
  and one SQLite transaction per batch into a fresh cache;
* ``muva ground run (prior)`` — the same path with the model-free prior.

Success rate: the share of parts the pose expert boxed itself (the rest fell back to the
prior) on all real crops of the run.  With ``--synth`` a small ``muva synth`` benchmark
is generated in a temporary folder and the prior and pose experts are scored against
its ground-truth boxes (mean IoU per part, share with IoU ≥ 0.5).

    python benchmarks/bench_grounding.py                 # throughput + success, 1,000 crops
    python benchmarks/bench_grounding.py --images 0      # all 5,572 mini_mars crops
    python benchmarks/bench_grounding.py --synth         # + IoU against synthetic ground truth
    python benchmarks/bench_grounding.py --models        # the transformers experts (below) only

``--models``: the transformers-backed experts on tiny random models (this CPU), with the
answer length pinned (``min_new_tokens = max_new_tokens``) to a real answer's length, so
speed does not depend on what random weights write: per crop one question per part
(``ask=each``, MUVA's way) against one joint question (``ask=joint``) — with the same crops
per call, and with as many sequences per call (3× the crops: the same memory) — and the Grounding
DINO detector (one forward pass per batch).  Rows: crops/s, generations (or forward
passes) per crop, speed-up against ``ask=each`` of the same model.  With a CUDA device
(``--device cuda``, the default when one is there) the same is measured on full-size,
randomly initialised Qwen2.5-VL-3B / 7B and Grounding DINO built from their published
architectures, with the projected hours to ground all of MSMT17 (126,441 crops) per GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from muva.grounding.run import ImageSet, ground_images, load_image  # noqa: E402


def real_images(limit: int) -> ImageSet:
    root = Path(os.environ.get("MUVA_SHARED_DATA", REPO.parent / "shared" / "data")) / "mini_mars"
    files = sorted(str(p) for p in root.glob("bbox_*/*/*.jpg"))
    if not files:
        print(f"note: {root} absent; using drawn stand-in crops (not real pedestrians)")
        sys.path.insert(0, str(REPO / "tests"))
        from test_grounding_common import person_image

        tmp = Path(tempfile.mkdtemp(prefix="muva-bench-ground-"))
        n = limit or 500
        for i in range(n):
            person_image(128, 256, seed=i).save(tmp / f"{i:05d}.jpg")
        return ImageSet("stand-in", tmp, sorted(str(p) for p in tmp.glob("*.jpg")))
    if limit:
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    return ImageSet("mini_mars", root, files)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="real crops to use (0 = all)")
    ap.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: cores, at most 4)")
    ap.add_argument("--synth", action="store_true", help="also score prior and pose against muva synth ground truth")
    ap.add_argument("--models", action="store_true", help="benchmark the transformers experts (mllm, gdino) only")
    ap.add_argument("--crops", type=int, default=48, help="--models: crops per measurement (a multiple of 3 x --batch)")
    ap.add_argument("--batch", type=int, default=8, help="--models: crops per batch (GPU: try 64-256)")
    ap.add_argument("--device", default=None, help="--models: cpu or cuda (default: cuda when available)")
    ap.add_argument("--full", default="", help="--models: full-size random models to time, comma-separated from "
                    "qwen2.5-3b,qwen2.5-7b,gdino-tiny (default on CUDA: all; on CPU: none)")
    args = ap.parse_args()
    if args.models:
        from grounding_models import bench_models  # benchmarks/grounding_models.py

        bench_models(args.crops, args.batch, args.device, args.full)
        return

    from muva.grounding.experts.pose import INPUT_SIZE, PoseExpert, letterbox
    from muva.grounding.experts.prior import PriorExpert

    images = real_images(args.images)
    n = len(images.paths)
    print(f"{n} crops from {images.name}; load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; {os.cpu_count()} CPU(s)")
    pose = PoseExpert(threads=args.threads)
    decoded = [load_image(p)[0] for p in images.paths]
    canvases = [letterbox(im, INPUT_SIZE, pose.margin)[0][None] for im in decoded[:200]]
    interp = pose._interp

    def invoke_only():
        for i in range(n):
            interp.set_tensor(pose._input, canvases[i % len(canvases)])
            interp.invoke()

    invoke_only()  # warm-up
    rows = [("litert invoke only (baseline)", timed(invoke_only))]
    results = []

    def expert_path():
        for i in range(0, n, pose.batch_size):
            batch = [load_image(p)[0] for p in images.paths[i : i + pose.batch_size]]
            results.extend(pose.ground(batch))

    rows.append(("pose expert (decode+model+boxes)", timed(expert_path)))
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("muva ground run (pose)", timed(lambda: ground_images(images, pose, Path(tmp) / "pose.sqlite", progress=False))))
        rows.append(("muva ground run (prior)", timed(lambda: ground_images(images, PriorExpert(), Path(tmp) / "prior.sqlite", progress=False))))

    base = n / rows[0][1]
    print(f"\n| path | crops/s | ratio vs baseline |\n|---|---:|---:|")
    for name, secs in rows:
        print(f"| {name} | {n / secs:.1f} | {n / secs / base:.2f} |")

    parts = pose.parts
    own = {p: sum(r[p].source == "pose" for r in results) for p in parts}
    reasons: dict[str, dict[str, int]] = {p: {} for p in parts}
    for r in results:
        for p in parts:
            if r[p].reason:
                reasons[p][r[p].reason] = reasons[p].get(r[p].reason, 0) + 1
    all_three = sum(all(r[p].source == "pose" for p in parts) for r in results)
    print(f"\n| part | boxed by pose | success | fallbacks |\n|---|---:|---:|---|")
    for p in parts:
        print(f"| {p} | {own[p]}/{n} | {100 * own[p] / n:.1f}% | {', '.join(f'{k} {v}' for k, v in sorted(reasons[p].items())) or '-'} |")
    print(f"| all parts | {all_three}/{n} | {100 * all_three / n:.1f}% | |")

    if args.synth:
        score_synth(args.threads)


def score_synth(threads: int | None) -> None:
    from muva.config import load_config
    from muva.data.synth import generate
    from muva.data.synth.config import SynthConfig
    from muva.grounding.evaluate import score_cache
    from muva.grounding.experts.pose import PoseExpert
    from muva.grounding.experts.prior import PriorExpert
    from muva.grounding.run import resolve_images

    parts = ("head", "upper_body", "legs", "shoes")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(SynthConfig, overrides=["num_domains=2", "ids_per_domain=40", "test_ids_per_domain=20"])
        generate(cfg, Path(tmp) / "synth")
        table = []
        for dom in sorted((Path(tmp) / "synth").glob("domain_*")):
            images = resolve_images(str(dom))
            for name, expert in (("prior", PriorExpert(parts=parts)), ("pose", PoseExpert(parts=parts, threads=threads))):
                cache = Path(tmp) / f"{dom.name}-{name}.sqlite"
                ground_images(images, expert, cache, progress=False)
                scores, info = score_cache(cache, dom / "parts.jsonl")
                table.append((dom.name, name, info["matched"], scores))
    print("\n| domain | expert | images | " + " | ".join(f"{p} IoU / ≥0.5" for p in parts) + " | mean IoU |")
    print("|---|---|---:|" + "---:|" * (len(parts) + 1))
    for dom, name, matched, scores in table:
        cells = [f"{scores[p].mean_iou:.3f} / {100 * scores[p].hit_rate:.0f}%" for p in parts]
        mean = float(np.mean([scores[p].mean_iou for p in parts]))
        print(f"| {dom} | {name} | {matched} | " + " | ".join(cells) + f" | {mean:.3f} |")


if __name__ == "__main__":
    main()
