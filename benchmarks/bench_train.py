"""Training-step throughput: tiny / demo / full MUVA on CPU, MUVA vs CLIP-ReID stage-2 step ratio,
and (``--device cuda --amp``) full ViT-B/16 at batch 64 with AMP: images/s and peak GPU memory.

Stage-2 steps are timed on preloaded random tensors (no JPEG decoding): forward, the full MUVA
objective (ID + cluster memory + i2t + mask BCE/Dice) or CLIP-ReID's (0.25·ID + triplet + i2t),
backward and an Adam step.  Models are randomly initialised (no download).

    .venv/bin/python benchmarks/bench_train.py                       # CPU: tiny, demo, full (batch 8)
    .venv/bin/python benchmarks/bench_train.py --only tiny demo      # quicker
    .venv/bin/python benchmarks/bench_train.py --device cuda --amp   # GPU: full ViT-B/16, batch 64 (<= 3 min)
    .venv/bin/python benchmarks/bench_train.py --profile             # operator calls per step, top operators
    .venv/bin/python benchmarks/bench_train.py --compile --only demo # eager vs torch.compile step time
    .venv/bin/python benchmarks/bench_train.py --device cuda --amp --compile --compile-mode reduce-overhead  # + CUDA graphs

``--profile`` shows where time goes on any machine: per step, the operator calls of MUVA
and the baseline (all ``aten::`` calls, and the kernel-like ones by phase — on a GPU each
is about one kernel launch, so their ratio is the launch-overhead ratio), and the
operators with the most self time (see ``benchmarks/op_profile.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPUs: spinning OpenMP threads distort timings
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def configs():
    from muva.viz.demo import DEMO_CONFIG
    from muva.config import from_dict
    from muva.models import ModelConfig, tiny_config

    demo = from_dict(ModelConfig, DEMO_CONFIG["model"])
    full = ModelConfig(pretrained="none")
    return {"tiny": (tiny_config(), 16), "demo": (demo, 32), "full": (full, 8)}


def make_step(mcfg, batch: int, device: torch.device, amp: bool, num_classes: int = 64, compiled: str | None = None):
    """A stage-2 training step of ``mcfg`` on random tensors; ``compiled``: a torch.compile mode (``None`` = eager)."""
    from muva.engine.config import OptimConfig, Stage2Config
    from muva.engine.optim import build_optimizer
    from muva.engine.stage2 import Stage2Losses
    from muva.models import build_model

    torch.manual_seed(0)
    model = build_model(mcfg, num_classes, device=device)
    for n, p in model.named_parameters():  # stage 2: text side frozen
        if n.startswith(("prompts.", "text.")):
            p.requires_grad_(False)
    muva = model.num_parts > 0
    weights = {} if muva else {"id": 0.25, "imp": 0.0, "i2t": 1.0, "mask": 0.0, "triplet": 1.0}
    s2 = Stage2Config(weights=weights)
    text = torch.randn(num_classes, model.feature_dim, device=device)
    losses = Stage2Losses(s2, num_classes, model.feature_dim, text, muva).to(device)
    for term in losses.epoch_terms():  # the cluster memory (MUVA's imp term), filled once
        term.rebuild(torch.randn(num_classes * 2, model.feature_dim), torch.arange(num_classes).repeat(2))
    opt = build_optimizer(model.named_parameters(), OptimConfig(lr=1e-6))
    h, w = model.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    y = torch.arange(batch, device=device) // 4 % num_classes
    masks = torch.rand(batch, max(1, model.num_parts), model.num_patches, device=device) > 0.5
    batch_d = {"pid": y, "mask": masks[:, : model.num_parts]}
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    model.train()
    forward = compile_model(model, compiled) if compiled else model
    record = torch.profiler.record_function  # phases for --profile (no cost without a profiler)

    def step():
        ctx = torch.autocast(device.type, dtype=torch.float16) if (amp and device.type == "cuda") else torch.autocast("cpu", enabled=False)
        with record("forward"), ctx:
            out = forward(x)
            total = sum(losses(out, batch_d).values())
        opt.zero_grad(set_to_none=True)
        with record("backward"):
            scaler.scale(total).backward()
        with record("optimizer"):
            scaler.step(opt)
            scaler.update()

    return step, model


def compile_model(model, mode: str):
    from muva.models import compile_model as compile_fn

    return compile_fn(model, mode)


def time_step(step, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA)")
    ap.add_argument("--only", nargs="*", default=None, help="subset of: tiny demo full")
    ap.add_argument("--iters", type=int, default=0, help="timed steps (default: 10 tiny/demo, 3 full CPU, 20 GPU)")
    ap.add_argument("--batch", type=int, default=0, help="batch for the full config (default 8 CPU, 64 GPU)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per model (best kept)")
    ap.add_argument("--profile", action="store_true",
                    help="count operator calls per step (torch.profiler) for MUVA and the baseline, and the top operators by time")
    ap.add_argument("--compile", action="store_true", help="also time each model compiled with torch.compile (compile: true)")
    ap.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune"),
                    help="torch.compile mode with --compile (compile_mode; reduce-overhead = CUDA graphs)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    load = os.getloadavg()
    print(f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    cfgs = configs()
    names = args.only or (["full"] if device.type == "cuda" else ["tiny", "demo", "full"])
    if args.profile:
        return run_profiles(names, cfgs, device, args)
    rows = []
    for name in names:
        mcfg, batch = cfgs[name]
        if name == "full":
            batch = args.batch or (64 if device.type == "cuda" else 8)
        iters = args.iters or (10 if device.type == "cuda" else (2 if name == "full" else 10))
        warm = 3 if device.type == "cuda" else 1
        timings = {}
        steps = {}
        for variant, cfg in (("MUVA", mcfg), ("CLIP-ReID", replace(mcfg, parts=[]))):
            steps[variant] = make_step(cfg, batch, device, args.amp)[0]
            if args.compile:
                t = time.perf_counter()
                steps[f"{variant} compiled"] = compiled = make_step(cfg, batch, device, args.amp, compiled=args.compile_mode)[0]
                compiled()
                print(f"{name} {variant}: compiled in {time.perf_counter() - t:.0f} s", flush=True)
        peaks = {}
        # alternate the two models in rounds and keep each one's best round: other processes on a
        # shared machine then disturb both alike instead of whichever happened to run second
        for _ in range(args.rounds):
            for variant, step in steps.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sec = time_step(step, device, warm, iters)
                timings[variant] = min(sec, timings.get(variant, float("inf")))
                if device.type == "cuda":
                    peaks[variant] = max(peaks.get(variant, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
        for variant, sec in timings.items():
            rows.append((name, variant, batch, sec, batch / sec, peaks.get(variant, float("nan"))))
        del steps
        for suffix in ("", " compiled") if args.compile else ("",):
            rows.append((name, f"ratio MUVA / CLIP-ReID{suffix}", batch,
                         timings[f"MUVA{suffix}"] / timings[f"CLIP-ReID{suffix}"], float("nan"), float("nan")))
        if args.compile:
            for variant in ("MUVA", "CLIP-ReID"):
                rows.append((name, f"speed-up compiled / eager {variant}", batch,
                             timings[variant] / timings[f"{variant} compiled"], float("nan"), float("nan")))
    print(f"\n| config | model | batch | s/step | images/s | peak GPU GiB |\n|---|---|---|---|---|---|")
    for name, variant, batch, sec, ips, peak in rows:
        if variant.startswith("ratio"):
            print(f"| {name} | **{variant}** | {batch} | **{sec:.2f}×** (target ≤ 1.3×) | | |")
        elif variant.startswith("speed-up"):
            print(f"| {name} | {variant} | {batch} | {sec:.2f}× | | |")
        else:
            print(f"| {name} | {variant} | {batch} | {sec:.3f} | {ips:.1f} | {'' if peak != peak else f'{peak:.2f}'} |")
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


def run_profiles(names, cfgs, device, args) -> int:
    from op_profile import print_profiles, profile_step

    if args.compile:  # the generated C++ kernels show up in the profile one by one
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    iters = 2
    rows = []
    for name in names:
        mcfg, batch = cfgs[name]
        if name == "full":
            batch = args.batch or (64 if device.type == "cuda" else 8)
        for compiled in (None, args.compile_mode) if args.compile else (None,):
            for variant, cfg in (("MUVA", mcfg), ("CLIP-ReID", replace(mcfg, parts=[]))):
                step = make_step(cfg, batch, device, args.amp, compiled=compiled)[0]
                step()  # (compiles)
                label = f"{name} (batch {batch}){f', compiled ({compiled})' if compiled else ''}"
                rows.append((label, variant, profile_step(step, device, iters)))
                del step
    print_profiles(rows, iters)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
