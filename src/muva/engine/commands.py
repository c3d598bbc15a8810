"""``muva train``, ``muva eval``, ``muva demo`` and ``muva protocol run``.

Nothing heavy is imported at module level (torch and friends load inside the commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from muva.utils.errors import UsageError

TRAIN_HELP = "key.sub=value overrides of the config (e.g. stage2.epochs=10 data.batch_size=32)."


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (see configs/)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=TRAIN_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from <output.dir>/last.pt (same seed: identical losses on CPU); the config must fit the checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Empty output.dir first when it already holds a run (without it, or --resume, such a folder is refused)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress bar: per-epoch lines instead (as when the output is not a terminal)."),
    nproc: int = typer.Option(1, "--nproc-per-node", min=1, help="Train with DistributedDataParallel in N local processes (torchrun's launcher; errors printed once)."),
) -> None:
    """Train MUVA (stage 1 prompts, stage 2 image encoder) or the CLIP-ReID baseline and evaluate on the targets.

    Under torchrun (torchrun --nproc_per_node N -m muva train -c ...) it trains with DistributedDataParallel.
    Ctrl-C (or SIGTERM) stops at the next step, saves <output.dir>/last.pt and prints the resume command.
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/training.md ("shared CPUs")
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: continue the run, or replace it")
    from muva.engine.config import load_experiment

    cfg = load_experiment(config, overrides or [])
    if nproc > 1 and "RANK" not in os.environ:
        from muva.engine.distributed import launch

        flags = [f for f, on in (("--resume", resume), ("--overwrite", overwrite), ("--quiet", quiet)) if on]
        raise typer.Exit(launch(nproc, ["-m", "muva", "train", "-c", str(config), *flags, *(overrides or [])]))
    from muva.engine.distributed import cleanup
    from muva.engine.run import Experiment

    exp = Experiment(cfg, resume=resume, quiet=quiet, overwrite=overwrite)
    try:
        results = exp.run()
    finally:
        cleanup()
    if results and exp.dist.is_main:
        from muva.evaluation import results_table

        typer.echo(results_table(results, method=cfg.name).to_markdown())


def eval_cmd(
    model: Optional[Path] = typer.Argument(None, metavar="MODEL", help="model.safetensors, last.pt (or best.pt) of a run; the file carries the model's config."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of the evaluation settings (e.g. eval.rerank=true data.root=/data)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Experiment YAML for the evaluation settings and targets (default: the run's config.yaml beside MODEL, else muva's defaults). The model itself is always built from MODEL."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Same as MODEL (for older scripts)."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Dataset (name or folder) to evaluate on; repeatable. Default: the config's targets."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for eval_results.md/.csv/.json (default: beside MODEL)."),
) -> None:
    """Evaluate a trained model on any target (mAP, Rank-k, mINP; tables in the paper's layout).

    Unreadable query/gallery images are left out and listed (eval_results.json, "skipped_images"),
    never replaced; data.on_bad_image=raise makes them an error.
    """
    if checkpoint is not None and model is not None and "=" in str(model):  # MODEL slot took an override
        overrides, model = [str(model), *(overrides or [])], None
    model = model or checkpoint
    if model is None:
        raise UsageError("give the model file: muva eval RUN/model.safetensors [-t TARGET]")
    from rich.console import Console

    from muva.engine.evaluate import evaluate_checkpoint, resolve_eval_config

    console = Console(stderr=True)
    cfg, source = resolve_eval_config(model, config, overrides or [])
    console.print(f"evaluation settings: {source}", highlight=False)
    results, notes = evaluate_checkpoint(cfg, model, target or None)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    from muva.evaluation import results_table

    selected = any("not a domain-generalisation result" in n for n in notes)
    table = results_table(results, method=f"{cfg.name} ({model.name}: selected on the target test set)"
                          if selected else cfg.name)
    folder = out or model.parent
    table.write(folder, "eval_results")
    typer.echo(table.to_markdown())
    for name, r in results.items():
        skipped = r.info.get("skipped_images", [])
        if skipped:
            console.print(f"[yellow]{name}: {len(skipped)} unreadable image(s) left out of the evaluation[/] "
                          f"(listed in eval_results.json), e.g. {skipped[0]['path']} ({skipped[0]['reason']})",
                          highlight=False)
    typer.echo(f"tables written to {folder}/eval_results.(md|csv|json)")


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder (data, caches, runs, report.html)."),
    config: Path = typer.Option(None, "--config", "-c", help="Demo config (default: configs/demo.yaml or the built-in one)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of the demo config."),
) -> None:
    """The quick start: synthetic domains → grounding → train MUVA and the global baseline → evaluate on an
    unseen domain → runs/demo/report.html.  CPU only, no downloads, a few minutes on 2 cores."""
    from muva.viz.demo import run_demo

    run_demo(out, config, overrides or [])


def protocol_run_cmd(
    name: str = typer.Argument(..., help="Protocol name (muva protocol list) or synth:PATH."),
    config: Path = typer.Option(Path("configs/muva/base_vitb16.yaml"), "--config", "-c", help="Base experiment config for every setting."),
    overrides: Optional[List[str]] = typer.Argument(None, help=TRAIN_HELP),
    setting: Optional[List[str]] = typer.Option(None, "--setting", "-s", help="Only these settings (repeatable), e.g. 'MA->D'."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the runs and the table (default runs/protocol/<protocol>/<config name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every setting's state (done / stale: differing keys / to train) and exit."),
    rerun: bool = typer.Option(False, "--rerun", help="Clear and retrain the chosen settings whose earlier run differs from this config (stale)."),
) -> None:
    """Train and evaluate every setting of a protocol; write one table with the paper's numbers beside ours.

    A finished setting is reused only when its provenance (config, weights, grounding caches, image lists) matches.
    """
    from muva.engine.protocol import run_protocol

    run_protocol(name, config, overrides or [], settings=setting or None, out=out, dry_run=dry_run, rerun=rerun)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("demo")(demo_cmd)
    from muva.data.commands import protocol_app

    protocol_app.command("run")(protocol_run_cmd)
