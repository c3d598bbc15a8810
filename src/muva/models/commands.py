"""``muva model ...`` commands: inspect a model config (geometry, parameters) and check CLIP weights."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from muva.utils.errors import MuvaError, UsageError

model_app = typer.Typer(help="Inspect MUVA / CLIP-ReID model configs and CLIP weight files.", no_args_is_help=True)


@model_app.command("info")
def info(
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. parts=[] stride=12 pretrained=/path/ViT-B-16.pt"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Model YAML (configs/model/*.yaml). Default: muva_vitb16 settings."),
    preset: str = typer.Option("muva-vitb16", "--preset", help="Preset when no --config: muva-vitb16, clipreid-vitb16, tiny."),
    classes: int = typer.Option(0, "--classes", help="Training identities (adds prompts + classifier to the count)."),
    weights: bool = typer.Option(False, "--weights", help="Load the configured CLIP weights (tag download or local file) to check them."),
) -> None:
    """Build the model (random weights unless --weights) and print its geometry and parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from muva.config import apply_overrides, load_config
    from muva.models import MODELS, ModelConfig

    try:
        if config is not None:
            cfg = load_config(ModelConfig, config, overrides or [])
        else:
            cfg = apply_overrides(ModelConfig, MODELS.get(preset)(), overrides or [])
    except KeyError as exc:  # an unknown --preset (str() of a plain KeyError is quoted: use its message)
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from exc

    from muva.models import build_model

    try:
        model = build_model(cfg, classes, load_weights=weights)
    except MuvaError:  # weights that cannot be had, a checkpoint that does not fit: reported by the command line
        raise
    except ValueError as exc:  # settings the model cannot be built with (e.g. a stride above the patch size)
        raise UsageError(str(exc)) from exc
    console = Console()
    t = Table(title=f"{cfg.backbone} · {'MUVA' if cfg.parts else 'CLIP-ReID global baseline'}", show_header=False)
    rep = model.load_report
    rows = [
        ("weights", f"{rep.source} ({rep.format}{', ' + rep.path if rep.path else ''})" if weights else "random (pass --weights to load)"),
        ("input (H, W)", str(model.input_size)),
        ("patch / stride", f"{model.patch_size} / {model.stride}"),
        ("grid (rows, cols)", f"{model.grid} = {model.num_patches} patches"),
        ("parts", ", ".join(model.parts) or "none"),
        ("layers", str(model.num_layers)),
        ("mask gating", f"{cfg.mask_gating} (tau {cfg.mask_temperature}, {cfg.mask_heads} heads)" if cfg.parts else "-"),
        ("feature dim", str(model.feature_dim)),
        ("prompts", " | ".join(model.templates)),
    ]
    for name, n in model.count_parameters().items():
        rows.append((f"params: {name}", f"{n:,}"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
