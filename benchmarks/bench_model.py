"""MUVA model cost vs the plain open_clip visual encoder (same batch, same run).

    .venv/bin/python benchmarks/bench_model.py                  # ViT-B/16, 256×128, batch 8, CPU
    .venv/bin/python benchmarks/bench_model.py --repeats 3 --batch 4
    .venv/bin/python benchmarks/bench_model.py --device cuda --amp

Rows (median of ``--repeats`` timed runs after one warm-up, runs interleaved):

* ``plain open_clip``: open_clip's ``VisionTransformer`` built for the input size
  (``model.visual(x)``), nothing else — the baseline of every ratio;
* ``clipreid (ours, R=0)``: our encoder + BNNeck + classifier with no parts;
* ``muva (R=3, predicted)``: part tokens, 12 mask predictors, AM-MSA with predicted
  masks (offline gating), BNNeck + classifier; backward through ID logits + mask logits.

conv1 is frozen in all three (MUVA's setting). Targets: MUVA fwd+bwd ≤ 1.3×, MUVA
inference ≤ 1.25× the plain encoder.  Random weights (no download needed).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--classes", type=int, default=751)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="autocast (fp16 on cuda, bf16 on cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--only", choices=["train", "inference"], default=None, help="run one of the two cases")
    ap.add_argument("--profile", action="store_true", help="also print the top operators of plain vs MUVA inference")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    from open_clip.model import CLIPVisionCfg, _build_vision_tower
    import open_clip

    from muva.models import ModelConfig, build_model

    size = (args.height, args.width)
    base = open_clip.get_model_config(args.backbone)
    vcfg = dict(base["vision_cfg"], image_size=size)
    plain = _build_vision_tower(base["embed_dim"], CLIPVisionCfg(**vcfg), quick_gelu=True).to(device)
    plain.conv1.weight.requires_grad_(False)

    cfg = ModelConfig(backbone=args.backbone, pretrained="none", input_size=size)
    muva = build_model(cfg, num_classes=args.classes, device=device)
    base_cfg = ModelConfig(backbone=args.backbone, pretrained="none", input_size=size, parts=[])
    clipreid = build_model(base_cfg, num_classes=args.classes, device=device)

    x = torch.randn(args.batch, 3, *size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    amp = (
        torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
        if args.amp
        else contextlib.nullcontext()
    )

    def plain_train():
        plain.train()
        with amp:
            y = plain(x)
        y.float().pow(2).mean().backward()

    def model_train(m):
        def run():
            m.train()
            with amp:
                out = m(x)
                loss = torch.nn.functional.cross_entropy(out["logits"].float(), labels)
                for ml in out["mask_logits"]:
                    loss = loss + ml.float().sigmoid().mean()
            loss.backward()

        return run

    def plain_infer():
        plain.eval()
        with torch.inference_mode(), amp:
            plain(x)

    def model_infer(m):
        def run():
            m.eval()
            with torch.inference_mode(), amp:
                m.extract(x)

        return run

    cases = {
        "train fwd+bwd": [("plain open_clip", plain_train), ("clipreid (ours, R=0)", model_train(clipreid)), ("muva (R=3, predicted)", model_train(muva))],
        "inference fwd": [("plain open_clip", plain_infer), ("clipreid (ours, R=0)", model_infer(clipreid)), ("muva (R=3, predicted)", model_infer(muva))],
    }
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in (("plain", plain), ("muva", muva))}
    print(f"backbone {args.backbone}, input {size[0]}x{size[1]}, batch {args.batch}, device {device}, amp {args.amp}, "
          f"threads {torch.get_num_threads()}, repeats {args.repeats}")
    print(f"parameters: plain visual {params['plain'] / 1e6:.2f} M, MUVA model (visual+text+heads, {args.classes} ids) {params['muva'] / 1e6:.2f} M, "
          f"grid {muva.grid}, tokens {1 + muva.num_parts + muva.num_patches}")
    if args.only:
        cases = {k: v for k, v in cases.items() if k.startswith(args.only)}
    for title, rows in cases.items():
        times: dict[str, list[float]] = {name: [] for name, _ in rows}
        for name, fn in rows:  # warm-up
            fn()
            for m in (plain, muva, clipreid):
                m.zero_grad(set_to_none=True)
        for _ in range(args.repeats):
            for name, fn in rows:
                times[name].append(_time(fn, device))
                for m in (plain, muva, clipreid):
                    m.zero_grad(set_to_none=True)
        ref = statistics.median(times["plain open_clip"])
        print(f"\n{title}")
        print(f"| {'model':<24} | {'median s':>9} | {'min s':>7} | {'ratio':>6} |")
        print(f"|{'-' * 26}|{'-' * 11}|{'-' * 9}|{'-' * 8}|")
        for name, _ in rows:
            med = statistics.median(times[name])
            print(f"| {name:<24} | {med:9.3f} | {min(times[name]):7.3f} | {med / ref:5.2f}x |")


    if args.profile:
        _profile(plain_infer, model_infer(muva))


def _profile(plain_fn, muva_fn) -> None:
    from torch.profiler import ProfilerActivity, profile

    def ops(fn):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as p:
            fn()
        return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in p.key_averages()}

    a, b = ops(plain_fn), ops(muva_fn)
    print("\ninference operators (self CPU ms / calls)")
    for k in sorted(set(a) | set(b), key=lambda k: -max(a.get(k, (0, 0))[0], b.get(k, (0, 0))[0]))[:15]:
        pa, pb = a.get(k, (0.0, 0)), b.get(k, (0.0, 0))
        print(f"{k:58s} plain {pa[0]:9.1f} / {pa[1]:4d}   muva {pb[0]:9.1f} / {pb[1]:4d}")
    print(f"{'total':58s} plain {sum(v[0] for v in a.values()):9.1f}          muva {sum(v[0] for v in b.values()):9.1f}")


if __name__ == "__main__":
    main()
