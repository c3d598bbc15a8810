"""``muva train``, ``muva eval``, ``muva demo`` and ``muva protocol run``.

Nothing heavy is imported at module level (torch and friends load inside the commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

TRAIN_HELP = "key.sub=value overrides of the config (e.g. stage2.epochs=10 data.batch_size=32)."


def _load(config: Optional[Path], overrides: List[str]):
    from muva.cli import fail
    from muva.config import ConfigError
    from muva.engine.config import load_experiment

    try:
        return load_experiment(config, overrides or [])
    except ConfigError as exc:
        raise fail(str(exc))


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (see configs/)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=TRAIN_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from <output.dir>/last.pt (same seed: identical losses on CPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress bar (logs still go to the run folder)."),
) -> None:
    """Train MUVA (stage 1 prompts, stage 2 image encoder) or the CLIP-ReID baseline and evaluate on the targets.

    Under torchrun (torchrun --nproc_per_node N -m muva train -c ...) it trains with DistributedDataParallel.
    """
    import os

    from muva.cli import fail
    from muva.data.records import DatasetError

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/training.md ("shared CPUs")
    cfg = _load(config, overrides)
    try:
        from muva.engine.run import Experiment
        from muva.grounding import GroundingCacheError

        exp = Experiment(cfg, resume=resume, quiet=quiet)
        try:
            results = exp.run()
        finally:
            from muva.engine.distributed import cleanup

            cleanup()
    except (DatasetError, GroundingCacheError, FileNotFoundError, KeyError) as exc:
        raise fail(str(exc).strip('"'))
    except ValueError as exc:
        raise fail(str(exc))
    if results and exp.dist.is_main:
        from muva.evaluation import results_table

        typer.echo(results_table(results, method=cfg.name).to_markdown())


def eval_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The experiment YAML the model was trained with."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.safetensors, last.pt or best.pt of a run."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Dataset (name or folder) to evaluate on; repeatable. Default: the config's targets."),
    overrides: Optional[List[str]] = typer.Argument(None, help=TRAIN_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for results.md/.csv/.json (default: beside the checkpoint)."),
) -> None:
    """Evaluate a trained model on any target (mAP, Rank-k, mINP; tables in the paper's layout)."""
    from muva.cli import fail
    from muva.data.records import DatasetError

    cfg = _load(config, overrides)
    try:
        from muva.engine.evaluate import evaluate_checkpoint

        results = evaluate_checkpoint(cfg, checkpoint, target or None)
    except (DatasetError, FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        raise fail(str(exc).strip('"'))
    from muva.evaluation import results_table

    table = results_table(results, method=cfg.name)
    folder = out or checkpoint.parent
    table.write(folder, "eval_results")
    typer.echo(table.to_markdown())
    typer.echo(f"tables written to {folder}/eval_results.(md|csv|json)")


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder (data, caches, runs, report.html)."),
    config: Path = typer.Option(None, "--config", "-c", help="Demo config (default: configs/demo.yaml or the built-in one)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of the demo config."),
) -> None:
    """The quick start: synthetic domains → grounding → train MUVA and the global baseline → evaluate on an
    unseen domain → runs/demo/report.html.  CPU only, no downloads, a few minutes on 2 cores."""
    from muva.cli import fail
    from muva.config import ConfigError

    try:
        from muva.engine.demo import run_demo

        run_demo(out, config, overrides or [])
    except ConfigError as exc:
        raise fail(str(exc))


def protocol_run_cmd(
    name: str = typer.Argument(..., help="Protocol name (muva protocol list) or synth:PATH."),
    config: Path = typer.Option(Path("configs/muva/base_vitb16.yaml"), "--config", "-c", help="Base experiment config for every setting."),
    overrides: Optional[List[str]] = typer.Argument(None, help=TRAIN_HELP),
    setting: Optional[List[str]] = typer.Option(None, "--setting", "-s", help="Only these settings (repeatable), e.g. 'MA->D'."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the runs and the table (default runs/protocol/<name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be trained and exit."),
) -> None:
    """Train and evaluate every setting of a protocol; write one table with the paper's numbers beside ours."""
    from muva.cli import fail
    from muva.data.records import DatasetError

    try:
        from muva.engine.protocol import run_protocol

        run_protocol(name, config, overrides or [], settings=setting or None, out=out, dry_run=dry_run)
    except (DatasetError, KeyError, ValueError) as exc:
        raise fail(str(exc).strip('"'))


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("demo")(demo_cmd)
    from muva.data.commands import protocol_app

    protocol_app.command("run")(protocol_run_cmd)
