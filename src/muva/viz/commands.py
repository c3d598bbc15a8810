"""``muva viz ranks`` and ``muva viz masks``: look at what a trained model does."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from muva.utils.errors import MuvaError, UsageError

viz_app = typer.Typer(help="Visualise ranked lists and part masks.", no_args_is_help=True)


@viz_app.command("ranks")
def ranks(
    features: Path = typer.Argument(..., help="Feature folder from `muva extract` holding query and gallery splits (or the query features when --gallery is given)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: rank_NNN_<query>.png per query and ranks.html."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Separate gallery feature folder/file."),
    query_split: str = typer.Option("query", "--query-split", help="Split of FEATURES holding the queries ('' = all rows)."),
    gallery_split: str = typer.Option("gallery", "--gallery-split", help="Split holding the gallery ('' = all rows)."),
    topk: int = typer.Option(10, "-k", "--topk", help="Gallery images per query."),
    num: int = typer.Option(10, "--num", "-n", help="Random queries to draw (ignored with --query)."),
    query: Optional[List[str]] = typer.Option(None, "--query", "-q", help="Query file name or path to draw (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random query choice."),
    cell: str = typer.Option("128x64", "--cell", help="Thumbnail size HxW."),
) -> None:
    """Draw queries with their top-k gallery images: green = same identity, red = other, with distances and file names.

    Gallery images with the query's identity and camera are skipped, as in the evaluation.
    Writes one PNG per query and one HTML page (ranks.html) with everything embedded.
    """
    from rich.console import Console

    from muva.utils.featurefiles import load_features
    from muva.viz.ranks import RankLayout, visualize_ranks

    try:
        h, w = (int(v) for v in cell.lower().split("x"))
    except ValueError:
        raise UsageError(f"--cell must look like 128x64, not {cell!r}") from None
    try:
        fs = load_features(features)
        q = fs.split(query_split) if query_split else fs
        if gallery is not None:
            g_all = load_features(gallery)
            g = g_all.split(gallery_split) if gallery_split and gallery_split in set(g_all.splits) else g_all  # type: ignore[arg-type]
        else:
            g = fs.split(gallery_split) if gallery_split else fs
        res = visualize_ranks(q, g, out, topk=topk, num=num, names=query or None, seed=seed, layout=RankLayout(cell_w=w, cell_h=h))
    except KeyError as exc:  # a --query / split name that is not there; str() of a KeyError is quoted
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from exc
    Console(stderr=True).print(f"{len(res['pngs'])} ranked lists → {out} (open {res['html']}); rank-1 correct on {res['rank1_shown']:.0%} of them")


@viz_app.command("masks")
def masks(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (save_model file) or exported .onnx with masks."),
    images: List[Path] = typer.Argument(..., help="Images or folders of images."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: masks_NNN_<image>.png per image."),
    layers: str = typer.Option("final", "--layers", help="final, all, or 1-based layer numbers such as 1,6,12."),
    pseudo: Optional[Path] = typer.Option(None, "--pseudo", help="Pseudo masks to show beside the prediction: a grounding cache (muva ground) or a synthetic domain's parts.jsonl."),
    num: int = typer.Option(16, "--num", "-n", help="At most this many images (random over the folders, seeded)."),
    seed: int = typer.Option(0, "--seed"),
    soft: bool = typer.Option(False, "--soft", help="Tint by probability instead of the 0.5-thresholded mask."),
    scale: int = typer.Option(2, "--scale", help="Upscaling of the model-input-sized pictures."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Overlay predicted part masks (per layer or final) and pseudo masks on images."""
    import numpy as np
    from rich.console import Console

    from muva.inference.commands import _expand_images
    from muva.inference.extractor import FeatureExtractor
    from muva.viz.masks import MaskLayout, masks_from_parts_file, visualize_masks

    try:
        paths = _expand_images(list(images))
        if len(paths) > num:
            rng = np.random.default_rng(seed)
            paths = [paths[i] for i in sorted(rng.choice(len(paths), size=num, replace=False))]
        fx = FeatureExtractor(checkpoint, device=device, batch_size=16)
        pseudo_masks = None
        if pseudo is not None:
            stride = int(fx.info.extra.get("stride") or fx.input_size[0] // max(fx.grid[0], 1))
            patch = fx.info.extra.get("patch")
            if pseudo.suffix == ".jsonl":
                pseudo_masks = masks_from_parts_file(pseudo, fx.parts, fx.input_size, stride, patch)
            else:
                from muva.grounding.masks import load_pseudo_masks

                pseudo_masks = load_pseudo_masks(paths, pseudo, fx.parts, fx.input_size, stride, patch=patch, missing="skip")
        written = visualize_masks(fx, paths, out, layers=layers, pseudo=pseudo_masks, soft=soft, layout=MaskLayout(scale=scale))
    except MuvaError:  # a model file the extractor cannot use, a missing cache, ...: reported by the command line
        raise
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # e.g. a missing image, a bad --layers value
        raise UsageError(str(exc)) from exc
    Console(stderr=True).print(f"{len(written)} mask panels → {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(viz_app, name="viz")
