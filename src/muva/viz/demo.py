"""``muva demo``: the whole pipeline on synthetic data, CPU only, no downloads, minutes on 2 cores.

1. ``muva synth`` defaults → ``<out>/data/domain_0..2`` (skipped when already there);
2. grounding of the source domains' training images with the pose expert when its model
   file is already present locally, else the body-prior expert → ``<out>/grounding/``;
3. a small MUVA and the global baseline (same model without part tokens / mask loss)
   trained from scratch on domains 0+1 (``configs/demo.yaml`` or the built-in copy);
4. both, and the untrained model, evaluated on the unseen domain 2;
5. ``<out>/report.html`` (metrics, loss curves, ranked lists, predicted vs pseudo masks),
   ``<out>/results.md/.csv/.json``; the table is printed.

Re-running continues finished parts (data, caches, runs with ``results.json``) instead of
redoing them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from muva.config import apply_overrides, load_config
from muva.data.datasets import open_dataset
from muva.data.parts import get_part
from muva.data.synth import SynthConfig, generate
from muva.engine.config import ExperimentConfig
from muva.evaluation.tables import ResultTable
from muva.grounding.experts import build_expert
from muva.grounding.experts.pose import find_pose_model
from muva.grounding.run import ImageSet, ground_images, parts_to_ground
from muva.viz.report import (loss_curves_svg, mask_image, metrics_table_html, png_data_uri, ranked_list_image,
                             write_report)

__all__ = ["run_demo", "DEMO_CONFIG", "demo_configs"]

REPO_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"

#: The built-in demo configuration (configs/demo.yaml holds the same; a test checks it).
DEMO_CONFIG = {
    "name": "demo-muva", "seed": 1234, "device": "cpu", "amp": "none",
    "data": {"batch_size": 32, "num_instances": 4, "num_workers": 1, "eval_batch_size": 128, "check_images": False},
    "grounding": {"missing": "prior"},
    "model": {"backbone": "ViT-B-16", "pretrained": "none", "quick_gelu": True,
              "arch": {"embed_dim": 64, "image_size": 64, "patch_size": 16, "vision_width": 96, "vision_layers": 3,
                       "vision_heads": 4, "text_width": 32, "text_layers": 1, "text_heads": 2, "context_length": 32},
              "input_size": [128, 64], "stride": 16, "mask_heads": 2, "text_chunk_size": 256},
    "stage1": {"epochs": 4, "batch_size": 32, "optim": {"lr": 0.003},
               "schedule": {"name": "cosine", "warmup_epochs": 0, "warmup_lr": 0.003, "min_lr": 0.0003}},
    "stage2": {"epochs": 14, "optim": {"lr": 0.0005},
               "schedule": {"name": "multistep", "warmup_epochs": 2, "warmup_factor": 0.1, "milestones": [10], "gamma": 0.1}},
    "eval": {"every": 0},
    "output": {"dir": "runs/demo/muva", "log_every": 5, "tensorboard": True},
}


def _pick_expert() -> str:
    """``pose`` when its model file is already here (no download) and LiteRT imports, else ``prior``."""
    try:
        import ai_edge_litert  # noqa: F401


        find_pose_model(download=False)
        return "pose"
    except Exception:  # noqa: BLE001 - any failure means: use the prior
        return "prior"


def demo_configs(out: Path, config: Path | None, overrides: Sequence[str], sources: list[str], target: str,
                 expert: str):
    """``(muva_cfg, baseline_cfg)`` for the demo run folder ``out``; the sources' grounding
    caches are ``<out>/grounding/<domain>_<expert>.sqlite``."""

    base = load_config(ExperimentConfig, config, overrides) if config else apply_overrides(ExperimentConfig, DEMO_CONFIG, overrides)
    caches = {s: str(out / "grounding" / f"{Path(s).name}_{expert}.sqlite") for s in sources}
    options = base.grounding.options if base.grounding.expert == expert else {}  # options of another expert do not apply
    grounding = replace(base.grounding, expert=expert, options=options, caches={**base.grounding.caches, **caches})
    data = replace(base.data, sources=sources, targets=[target])
    muva = replace(base, data=data, grounding=grounding, output=replace(base.output, dir=str(out / "muva")))
    baseline = replace(muva, name="demo-global", model=replace(muva.model, parts=[]),
                       stage2=replace(muva.stage2, weights={**muva.stage2.weights, "mask": 0.0}),
                       output=replace(muva.output, dir=str(out / "global")))
    return muva, baseline


def _ground(domain: Path, cache: Path, expert_name: str, parts: Sequence[str], options: dict, console) -> None:
    """Ground the training images of ``domain`` into ``cache`` with the parts the model trains on."""

    ds = open_dataset(str(domain))
    images = ImageSet(ds.name, Path(ds.root).resolve(), [str(Path(r.path).resolve()) for r in ds.train])
    expert = build_expert(expert_name, parts=parts_to_ground(parts, cache), **options)
    try:
        summary = ground_images(images, expert, cache, progress=True)
    finally:
        expert.close()
    console.print(f"grounded {domain.name} with {expert_name} ({', '.join(expert.parts)}): {summary.processed} new, "
                  f"{summary.already_done} cached ({summary.unreadable} unusable)")


def _run(cfg, console):
    """Train (or reuse a finished run) and return ``(Experiment, results)``."""
    from muva.engine.run import Experiment  # loads torch: only after run_demo has set OMP_WAIT_POLICY

    exp = Experiment(cfg, resume=True, console=console)
    results = exp.run()
    return exp, results


def run_demo(out: str | Path = "runs/demo", config: str | Path | None = None, overrides: Sequence[str] = (),
             console=None) -> dict:
    """Run the demo (see the module doc); returns ``{"untrained"|"global"|"muva": EvalResult}``."""
    import os

    # OpenMP threads that spin while waiting make small models 10-25x slower when other processes
    # share the cores; passive waiting keeps the demo fast on a busy machine (must precede torch).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from rich.console import Console


    console = console or Console()
    t0 = time.time()
    out = Path(out)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    data = out / "data"
    if not (data / "synth.json").is_file():
        console.rule("[bold]1/5 synthetic domains")
        generate(SynthConfig(), data, progress=True, overwrite=True)
    else:
        console.print(f"using the synthetic data in {data}")
    domains = sorted(p for p in data.iterdir() if (p / "bounding_box_train").is_dir())
    sources, target = domains[:-1], domains[-1]
    console.rule("[bold]2/5 grounding (pseudo part masks)")
    expert = _pick_expert()
    muva_cfg, base_cfg = demo_configs(out, Path(config) if config else None, overrides,
                                      [str(d) for d in sources], str(target), expert)
    for d in sources:
        _ground(d, Path(muva_cfg.grounding.caches[str(d)]), expert, muva_cfg.model.parts, muva_cfg.grounding.options, console)
    console.rule("[bold]3/5 training MUVA (parts + masks)")
    muva_exp, muva_res = _run(muva_cfg, console)
    console.rule("[bold]4/5 training the global baseline (no parts)")
    _, base_res = _run(base_cfg, console)
    console.rule("[bold]5/5 untrained model, report")
    from muva.engine.evaluate import evaluate_model  # loads torch: only after run_demo has set OMP_WAIT_POLICY
    from muva.engine.run import set_seed  # loads torch: only after run_demo has set OMP_WAIT_POLICY
    from muva.models import build_model  # loads torch: only after run_demo has set OMP_WAIT_POLICY

    set_seed(muva_cfg.seed)
    untrained = build_model(muva_exp.model.cfg, muva_exp.train.num_classes)
    unt_res = evaluate_model(untrained, muva_exp.targets, muva_exp.eval_tf, muva_cfg, muva_exp.dist, None)
    name = muva_exp.targets[0][0]
    results = {"untrained": unt_res[name], "global baseline": base_res[name], "MUVA": muva_res[name]}

    table = ResultTable(rows=[(k, {name: v}) for k, v in results.items()], targets=[name])
    table.write(out, "results")
    _write_demo_report(out, muva_exp, results, expert, time.time() - t0)
    console.print(table.to_markdown())
    console.print(f"[bold green]demo finished in {time.time() - t0:.0f} s[/] → {out / 'report.html'}")
    return results


def _write_demo_report(out: Path, exp, results: dict, expert: str, seconds: float) -> Path:
    import numpy as np
    import torch

    from muva.engine.evaluate import target_features  # loads torch: only after run_demo has set OMP_WAIT_POLICY
    from muva.engine.logging import read_metrics  # loads torch: only after run_demo has set OMP_WAIT_POLICY

    name, splits = exp.targets[0]
    rows = [(k, {"mAP": 100 * r.mAP, "Rank-1": 100 * r.rank1, "Rank-5": 100 * r.rank5, "mINP": 100 * r.mINP})
            for k, r in results.items()]
    sections = [("Unseen-domain results (" + name + ")", metrics_table_html(rows, ["mAP", "Rank-1", "Rank-5", "mINP"])
                 + f"<p>Trained on {', '.join(d.name for d in exp.train.sources)} ({exp.train.num_classes} identities, "
                   f"{len(exp.train.records)} images); pseudo masks from the <b>{expert}</b> expert; "
                   f"total time {seconds:.0f} s.</p>")]
    curves = []
    for label, run in (("MUVA", out / "muva"), ("global", out / "global")):
        recs = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
        for stage in ("stage1", "stage2"):
            series = {}
            for rec in recs:
                if rec.get("stage") == stage and "epoch_loss/total" not in rec:
                    for k, v in rec.items():
                        if k.startswith("loss/"):
                            series.setdefault(k[5:], []).append((rec["step"], v))
            if series:
                curves.append(loss_curves_svg(series, f"{label} {stage} losses (per iteration)"))
    sections.append(("Loss curves", "".join(curves)))
    qf, gf, q, g, _ = target_features(exp.model, splits[0], exp.eval_tf, exp.cfg, exp.dist, None)
    ranked = ranked_list_image(q, g, qf.numpy(), gf.numpy())
    sections.append(("Ranked lists on the unseen domain (MUVA; green = same identity)",
                     f"<img src='{png_data_uri(ranked)}'>"))
    if exp.masks is not None:
        recs = exp.train.records[:: max(1, len(exp.train.records) // 6)][:6]
        imgs = torch.stack([exp.plain_ds[exp.train.records.index(r)]["image"] for r in recs])
        _, layers = exp.model.extract(imgs, return_masks=True)
        pred = layers[-1].float().numpy() > exp.model.cfg.mask_threshold
        pseudo = np.stack([exp.masks[r.path] for r in recs])
        parts = list(exp.model.cfg.parts)
        pic = mask_image([r.path for r in recs], pred, pseudo, exp.model.grid, parts)
        agree = float((pred == pseudo).mean())
        legend = ", ".join(f"<span style='color:rgb{get_part(p).colour}'>&#9632;</span> {p.replace('_', ' ')}" for p in parts)
        sections.append(("Part masks: pseudo (grounding) vs predicted (last layer)",
                         f"<img src='{png_data_uri(pic)}'><p>{legend}; patch agreement {100 * agree:.1f} %</p>"))
    return write_report(out / "report.html", "muva demo", sections)
