"""Synthetic benchmark generation speed (images/s) on one CPU core, 128×256, JPEG included.

    .venv/bin/python benchmarks/bench_synth.py                 # ~20 s
    .venv/bin/python benchmarks/bench_synth.py --images 600 --workers 2

Rows (best of ``--repeats`` runs; every row pinned to one core unless it says workers):

* ``jpeg encode only``: encoding an already rendered 128×256 image — the floor every
  generator pays and the baseline of the ratio column;
* ``draw person``: background crop + pose + figure + occluder + 2× reduction, no styling;
* ``style + jpeg``: the domain/camera finishing (resolution, blur, colour LUT, saturation,
  light map, noise) plus JPEG encoding;
* ``render (all stages)``: one full image in memory (what ``muva synth`` does per image);
* ``muva synth, 1 worker``: ``generate()`` end to end into a temporary folder (planning,
  files, parts.jsonl, metadata) — the figure checked against the 150 images/s target;
* ``muva synth, N workers``: the same with ``--workers`` processes (all cores).

The load average is printed: other work on the machine slows every row alike.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from muva.data.synth import SynthConfig, generate, plan_domain
from muva.data.synth.pipeline import DomainRenderer, image_rng
from muva.data.synth.figure import sample_pose
from muva.data.synth.render import draw_occluder, draw_person

TARGET = 150.0


def best_rate(fn, n: int, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU-time rate (images/s) over ``repeats`` runs.

    The CPU-time rate counts this process only (it is the figure that other load on a
    shared machine disturbs least); for multi-process rows it is not meaningful.
    """
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return n / wall, n / max(cpu, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=480, help="images per timed run (per row)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--core", type=int, default=0, help="CPU core the single-core rows are pinned to")
    args = ap.parse_args()

    all_cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if all_cores is not None:
        os.sched_setaffinity(0, {args.core})

    # A config whose first domain holds about --images images.
    n_ids = max(4, args.images // 8)
    cfg = SynthConfig(num_domains=1, ids_per_domain=n_ids, test_ids_per_domain=n_ids, images_per_id=4,
                      queries_per_id=1, gallery_per_id=3, distractors_per_domain=0, width=128, height=256)
    plan = plan_domain(cfg, 0)
    jobs = plan.jobs[: args.images]
    n = len(jobs)
    renderer = DomainRenderer(cfg, plan.style)
    for cam in range(cfg.num_cameras):  # scene banks and finishers are built once per worker
        renderer.bank(cam)
        renderer.finisher(cam)
    sample = renderer.render(jobs[0])[2]

    def jpeg_only():
        for _ in range(n):
            sample.save(io.BytesIO(), format="JPEG", quality=85)

    def draw_only():
        cw, ch = renderer.canvas_size
        for job in jobs:
            rng = image_rng(cfg.seed, 0, job.identity.key, job.index)
            canvas = renderer.bank(job.camid)[0].crop((0, 0, cw, ch))
            pose = sample_pose(rng, job.identity, (0.25,) * 4, 0.88, (cw, ch), cfg.occlusion_prob)
            draw_person(canvas, job.identity, pose)
            if pose.occluder is not None:
                draw_occluder(canvas, pose.occluder)
            canvas.reduce(2)

    reduced = [sample.copy() for _ in range(4)]

    def finish_only():
        for i, job in enumerate(jobs):
            renderer.finisher(job.camid).finish(reduced[i % 4], np.random.default_rng(i))

    def render_all():
        for job in jobs:
            renderer.render(job)

    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))

    def gen(workers: int):
        def run():
            generate(cfg, tmp / f"w{workers}", workers=workers, overwrite=True, progress=False)
        return run

    total = cfg.num_images
    rows = [
        ("jpeg encode only", best_rate(jpeg_only, n, args.repeats), "1 core"),
        ("draw person", best_rate(draw_only, n, args.repeats), "1 core"),
        ("style + jpeg", best_rate(finish_only, n, args.repeats), "1 core"),
        ("render (all stages)", best_rate(render_all, n, args.repeats), "1 core"),
        ("muva synth, 1 worker", best_rate(gen(1), total, args.repeats), "1 core"),
    ]
    if all_cores is not None:
        os.sched_setaffinity(0, all_cores)
    if args.workers > 1:
        rows.append((f"muva synth, {args.workers} workers", best_rate(gen(args.workers), total, args.repeats),
                     f"{len(all_cores) if all_cores else '?'} cores"))

    base = rows[0][1][0]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"synthetic generation, {cfg.width}x{cfg.height} JPEG, {n} images per in-memory row, "
          f"{total} per generate() row; best of {args.repeats}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores\n")
    print(f"| {'row':<26} | {'images/s':>9} | {'ms/image':>8} | {'vs jpeg-only':>12} | {'vs 150/s':>8} | {'images/CPU-s':>12} | where   |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 10}|{'-' * 14}|{'-' * 10}|{'-' * 14}|---------|")
    for name, (rate, cpu_rate), where in rows:
        cpu_txt = f"{cpu_rate:12.0f}" if "workers" not in name else f"{'-':>12}"
        print(f"| {name:<26} | {rate:9.0f} | {1000 / rate:8.2f} | {rate / base:11.3f}x | {rate / TARGET:7.2f}x | {cpu_txt} | {where:<7} |")
    one, one_cpu = rows[4][1]
    print(f"\nmuva synth on one core: {one:.0f} images/s wall clock, {one_cpu:.0f} images per CPU-second "
          f"({'meets' if one >= TARGET else 'MISSES'} the {TARGET:.0f} images/s target in wall-clock time)")


if __name__ == "__main__":
    main()
