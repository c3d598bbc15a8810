"""``muva evaluate-features QUERY GALLERY``: evaluate features brought from any toolkit."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def evaluate_features(
    query: Path = typer.Argument(..., help="Query features: .npz (features, pids[, camids, images]; see docs/evaluation.md) or a `muva extract` folder."),
    gallery: Path = typer.Argument(..., help="Gallery features, same formats (may be the same `muva extract` folder as QUERY)."),
    query_split: Optional[str] = typer.Option(None, "--query-split", help="Rows of this split of a `muva extract` folder (default: its 'query' rows if it has any, else all)."),
    gallery_split: Optional[str] = typer.Option(None, "--gallery-split", help="Same for GALLERY (default: its 'gallery' rows if it has any, else all)."),
    metric: str = typer.Option("cosine", "--metric", help="cosine (1 − cos, L2-normalised) or euclidean (squared)."),
    ap: str = typer.Option("community", "--ap", help="AP definition: community (mean precision at hits) or official (Market-1501 MATLAB)."),
    rerank: str = typer.Option("none", "--rerank", help="k-reciprocal re-ranking: none, exact or sparse."),
    k1: int = typer.Option(20, "--k1", help="Re-ranking k1."),
    k2: int = typer.Option(6, "--k2", help="Re-ranking k2."),
    lambda_value: float = typer.Option(0.3, "--lambda", help="Re-ranking λ (weight of the original distance)."),
    single_gallery_shot: bool = typer.Option(False, "--cuhk03-sgs", help="CUHK03 classic single-gallery-shot CMC (AP on the full list)."),
    repeats: int = typer.Option(10, "--repeats", help="Single-gallery-shot draws."),
    seed: int = typer.Option(0, "--seed", help="Seed of the single-gallery-shot draws."),
    max_rank: int = typer.Option(50, "--max-rank", help="Length of the CMC curve."),
    name: str = typer.Option("target", "--name", help="Target name in the table."),
    method: str = typer.Option("features", "--method", help="Row name in the table."),
    chunk_memory_mb: int = typer.Option(256, "--chunk-memory", help="Memory budget of one query chunk, MiB."),
    device: str = typer.Option("cpu", "--device", help="cpu, or a torch device such as cuda."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for results.md/.csv/.json and results_cmc.csv."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Evaluate QUERY against GALLERY and print mAP / Rank-k / mINP as a table.

    Bad inputs raise :class:`~muva.evaluation.EvaluationError` (or the feature reader's
    error); the command line reports them once.
    """
    # lazy: loaded when the command runs, so `muva --help` imports no NumPy / SciPy / rich
    from rich.console import Console

    from muva.evaluation import evaluate, results_table
    from muva.evaluation.io import load_query_gallery

    console = Console()
    qf, gf = load_query_gallery(query, gallery, query_split, gallery_split)
    has_cams = qf.camids is not None and gf.camids is not None
    res = evaluate(
        qf.features,
        gf.features,
        q_pids=qf.pids,
        g_pids=gf.pids,
        q_camids=qf.camids if has_cams else None,
        g_camids=gf.camids if has_cams else None,
        q_images=qf.images if not has_cams and qf.images and gf.images else None,
        g_images=gf.images if not has_cams and qf.images and gf.images else None,
        metric=metric,
        ap=ap,
        rerank=None if rerank == "none" else rerank,
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
        single_gallery_shot=single_gallery_shot,
        repeats=repeats,
        seed=seed,
        max_rank=max_rank,
        chunk_memory=chunk_memory_mb << 20,
        device=device,
        progress=not quiet,
    )
    table = results_table({name: res}, method=method)
    console.print(table.to_markdown(), highlight=False, markup=False)
    console.print(res.summary(), highlight=False)
    console.print(f"junk removed: {res.info.get('junk')}", highlight=False)
    if out is not None:
        paths = table.write(out)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("evaluate-features")(evaluate_features)
