"""``muva synth OUT_DIR``: generate the synthetic multi-domain pedestrian benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def synth(
    out_dir: Path = typer.Argument(..., help="Output folder; gets domain_0/, domain_1/, … (Market-1501 layout), synth.json, config.yaml."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides key=value, e.g. num_domains=4 ids_per_domain=60.", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (e.g. configs/synth.yaml); defaults are built in."),
    workers: int = typer.Option(1, "--workers", "-j", min=0, help="Processes rendering images; 0 = one per CPU core (up to 8; 1 for jobs under 600 images). The output bytes do not depend on it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a benchmark already in OUT_DIR."),
    montage: Optional[Path] = typer.Option(None, "--montage", help="Also write a montage PNG of several identities across domains and cameras here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate a synthetic multi-domain person re-ID benchmark with ground-truth part boxes.

    Every domain is its own Market-1501-layout dataset with its own style (background, light, colour cast, blur, noise, JPEG quality, resolution) and disjoint identities. Same seed, same bytes. The resolved config goes to OUT_DIR/config.yaml; see docs/synthetic.md.
    """
    from rich.console import Console
    from rich.table import Table

    from muva.config import ConfigError, config_keys, load_config
    from muva.data.synth import SynthConfig, generate, make_montage

    try:
        cfg = load_config(SynthConfig, config, overrides or [])
    except ConfigError as exc:  # the same error, with the valid keys added when it does not list them
        if "Valid keys" in str(exc):
            raise
        raise ConfigError(f"{exc}\nValid keys: {', '.join(config_keys(SynthConfig))}") from None
    if workers == 0:
        workers = auto_workers(cfg.num_images)
    meta = generate(cfg, out_dir, workers=workers, overwrite=overwrite, progress=not quiet)  # SynthError: reported by the CLI
    console = Console()
    if meta.get("skipped"):
        if not quiet:
            console.print(f"{out_dir} already holds this benchmark ({meta['num_images']:,} images); nothing to do "
                          "(--overwrite regenerates it).")
    elif not quiet:
        table = Table(title=f"synthetic benchmark in {out_dir}")
        for col in ("domain", "background", "season", "images", "train ids", "test ids"):
            table.add_column(col, justify="right" if col in ("images", "train ids", "test ids") else "left")
        for d in meta["domains"]:
            tr, te = d["pids"]["train"], d["pids"]["test"]
            table.add_row(d["path"], d["background"], d["season"], f"{d['num_images']:,}",
                          f"{tr[0]}–{tr[1]}", f"{te[0]}–{te[1]}")
        console.print(table)
        secs = meta["seconds"]
        console.print(f"{meta['num_images']:,} images in {secs:.1f} s ({meta['num_images'] / max(secs, 1e-9):.0f} images/s, "
                      f"{workers} worker{'s' if workers > 1 else ''})")
    if montage is not None:
        path = make_montage(out_dir, montage)
        if not quiet:
            console.print(f"montage: {path}")


def auto_workers(num_images: int) -> int:
    """One process per available core (at most 8); one for jobs too small to repay process start-up."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if num_images < 600 else max(1, min(8, cores))


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
