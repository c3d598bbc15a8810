"""``muva extract``, ``muva search build|query`` and ``muva export``: using a trained model.

Heavy packages (torch, faiss, onnx) are imported inside the commands only.  Bad input
is a :class:`~muva.utils.errors.MuvaError` — the concern's own (a dataset, model,
feature or index error) or a :class:`~muva.utils.errors.UsageError` for a flag value —
which the command line reports once, as one ``error:`` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from muva.utils.errors import UsageError

search_app = typer.Typer(help="Gallery search with faiss: build an index from features, query it.", no_args_is_help=True)


def _expand_images(items: list[Path]) -> list[str]:
    from muva.inference.extract import folder_rows

    out: list[str] = []
    for p in items:
        if p.is_dir():
            out.extend(r["path"] for r in folder_rows(p))
        elif p.exists():
            out.append(str(p))
        else:
            raise UsageError(f"{p} does not exist")
    return out


def extract(
    checkpoint: Path = typer.Argument(..., help="Model file: a training checkpoint (save_model .safetensors) or an exported .onnx."),
    source: str = typer.Argument(..., help="A registered dataset name (with --root), a dataset folder (Market layout / synthetic domain), or any folder of images."),
    out: Path = typer.Option(..., "-o", "--out", help="Feature folder to write (resumed if it holds an unfinished run)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root for a registered dataset name (default $MUVA_DATA)."),
    dataset_option: Optional[List[str]] = typer.Option(
        None, "--dataset-option", "-O", metavar="KEY=VALUE",
        help="Dataset option, repeatable (e.g. variant=labeled, split=3, train_split=train+val).",
    ),
    splits: str = typer.Option("query,gallery", "--splits", help="Dataset splits to extract, comma-separated (train, query, gallery)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per forward pass."),
    flip: bool = typer.Option(False, "--flip", help="Add the horizontally flipped image's features (test-time augmentation)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, …"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image-decoding processes (default 1)."),
    shard_size: int = typer.Option(8192, "--shard-size", help="Rows per features-NNNNN.safetensors shard (the resume granularity)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh instead of resuming what OUT already holds."),
    backend: str = typer.Option("auto", "--backend", help="torch, onnx, or auto (onnx for .onnx files)."),
) -> None:
    """Extract L2-normalised features + metadata (path, identity, camera) into a feature folder.

    Writes OUT/features.json, OUT/features-NNNNN.safetensors and OUT/metadata.csv
    (docs/inference.md); unreadable images are skipped and listed in OUT/failed.csv.
    Re-running the same command resumes an interrupted extraction.
    """
    from rich.console import Console

    from muva.data.datasets import dataset_options_for
    from muva.inference.backends import BACKENDS
    from muva.inference.extract import extract_to_folder, gather_rows
    from muva.inference.extractor import FeatureExtractor

    console = Console(stderr=True)
    split_list = [s.strip() for s in splits.split(",") if s.strip()]
    if backend not in BACKENDS:
        raise UsageError(f"backend must be 'torch', 'onnx' or 'auto', not {backend!r}")
    options = dataset_options_for([source], dataset_option)[0] if dataset_option else None
    rows, src = gather_rows(source, root=root, splits=split_list, options=options)
    fx = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, flip=flip, backend=backend, num_workers=workers)
    console.print(f"{len(rows):,} images from {src.get('name') or src.get('path')} → {out} ({fx.dim}-d, {fx.backend}{', flip' if flip else ''})")
    summary = extract_to_folder(fx, rows, out, shard_size=shard_size, resume=not overwrite, source=src)
    msg = f"wrote {summary['written']:,} new rows ({summary['rows']:,} in all, {summary['skipped_existing']:,} already there)"
    if summary["failed_total"]:
        msg += f"; {summary['failed_total']:,} unreadable image(s) listed in {Path(out) / 'failed.csv'}"
    console.print(msg)


@search_app.command("build")
def search_build(
    features: Path = typer.Argument(..., help="Feature folder from `muva extract` (or a .safetensors/.npz file with a 'features' array)."),
    out: Path = typer.Option(..., "-o", "--out", help="Index folder to write (index.faiss, gallery.csv, index.json)."),
    kind: str = typer.Option("flat", "--kind", help="flat (exact inner product), ivf, hnsw, flat-sq8, ivf-sq8, hnsw-sq8."),
    factory: Optional[str] = typer.Option(None, "--factory", help="Any faiss factory string instead of --kind (e.g. 'IVF4096,PQ64')."),
    split: str = typer.Option("auto", "--split", help="Rows to index: a split name (gallery), 'all', or auto (gallery when the folder holds dataset splits)."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF cells (default ≈ 4·√N)."),
    m: int = typer.Option(32, "--m", help="HNSW links per node."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF cells visited per query (default max(8, nlist/32)); stored in the index."),
    ef_search: int = typer.Option(128, "--ef-search", help="HNSW search breadth; stored in the index."),
) -> None:
    """Build a faiss index over gallery features and save it to disk."""
    from rich.console import Console

    from muva.inference.search import GalleryIndex
    from muva.utils.featurefiles import read_manifest

    console = Console(stderr=True)
    chosen: str | None = None if split == "all" else split
    if split == "auto":
        chosen = None
        if features.is_dir():
            src = read_manifest(features).get("meta", {}).get("source", {})
            if "gallery" in src.get("splits", []) and len(src["splits"]) > 1:
                chosen = "gallery"
    index = GalleryIndex.from_features(features, split=chosen, kind=kind, factory=factory, nlist=nlist, m=m, nprobe=nprobe, ef_search=ef_search)
    index.save(out)
    info = index.info
    console.print(
        f"indexed {info['ntotal']:,} × {info['dim']}-d ({info['factory']}{', split ' + chosen if chosen else ''}) in {info['build_seconds']:.1f} s → {out}\n"
        f"memory ≈ {info['bytes_per_vector']:,.0f} bytes/vector (file: {info['file_bytes_per_vector']:,.0f} bytes/vector, {info['file_bytes'] / 2**20:,.1f} MiB)"
    )


@search_app.command("query")
def search_query(
    index_dir: Path = typer.Argument(..., help="Index folder from `muva search build`."),
    images: Optional[List[Path]] = typer.Argument(None, help="Query images or folders (needs --checkpoint)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Query features instead of images: a feature folder or file."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split of --features (e.g. query)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Model that extracted the gallery (for image queries)."),
    k: int = typer.Option(10, "-k", "--topk", help="Results per query."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="Override the IVF nprobe stored in the index."),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="Override the HNSW efSearch stored in the index."),
    flip: bool = typer.Option(False, "--flip", help="Flip test-time augmentation for image queries (use what the gallery used)."),
    device: str = typer.Option("cpu", "--device"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write all results to a .csv or .json file."),
    show: int = typer.Option(5, "--show", help="Queries printed as tables (all go to --out)."),
) -> None:
    """Query an index with images or feature files; prints top-k file names and cosine distances."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from muva.inference.backends import InferenceError
    from muva.inference.extractor import FeatureExtractor
    from muva.inference.search import GalleryIndex
    from muva.utils.featurefiles import load_features

    console = Console()
    index = GalleryIndex.load(index_dir, nprobe=nprobe, ef_search=ef_search)
    if features is not None:
        fs = load_features(features)
        if split:
            fs = fs.split(split)
        q, names = fs.features, fs.paths
    elif images:
        if checkpoint is None:
            raise UsageError("image queries need --checkpoint (the model that extracted the gallery)")
        paths = _expand_images(list(images))
        fx = FeatureExtractor(checkpoint, device=device, flip=flip)
        res = fx.extract_files(paths, progress=len(paths) > 256)
        for p, e in res.failed.items():
            console.print(f"[yellow]skipped unreadable {p}: {e}[/]")
        q, names = res.features, res.paths
    else:
        raise UsageError("give query images (with --checkpoint) or --features")
    if len(q) == 0:
        raise InferenceError("no query could be read")
    result = index.search(np.asarray(q), k=k)
    rows = result.to_rows(names)
    for qi, name in enumerate(names[:show]):
        table = Table(title=f"{Path(str(name)).name}", title_justify="left")
        for col in ("rank", "gallery", "distance", "pid", "camid"):
            table.add_column(col, justify="right" if col != "gallery" else "left")
        for r in (r for r in rows if r["query"] == name):
            table.add_row(str(r["rank"]), Path(r["gallery"]).name, f"{r['distance']:.4f}", str(r["pid"]), str(r["camid"]))
        console.print(table)
    per_q = 1000 * result.seconds / max(len(q), 1)
    Console(stderr=True).print(f"{len(q):,} queries × {len(index):,} gallery ({index.info['factory']}) in {result.seconds * 1000:.1f} ms ({per_q:.3f} ms/query)")
    if out is not None:
        from muva.utils.io import atomic_write_text

        if out.suffix == ".json":
            atomic_write_text(out, json.dumps(rows, indent=1))
        else:
            import csv
            import io

            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=["query", "rank", "gallery", "distance", "pid", "camid"], lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            atomic_write_text(out, buf.getvalue())
        Console(stderr=True).print(f"results → {out}")


def export(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (save_model file)."),
    out: Path = typer.Option(..., "-o", "--out", help="File to write, e.g. model.onnx."),
    fmt: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    masks: bool = typer.Option(True, "--masks/--no-masks", help="Also output the predicted part masks."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare ONNX Runtime with PyTorch on a random batch."),
    dynamo: bool = typer.Option(False, "--dynamo", help="Use the torch.export-based exporter instead of the TorchScript one."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: dynamic int8 (weights per channel; mask predictors stay float32): about 3× PyTorch's CPU speed on CPUs with VNNI/AMX; features close to, not equal to, PyTorch's."),
) -> None:
    """Export the inference model (images → L2-normalised features [, part masks]) with a dynamic batch axis."""
    from rich.console import Console

    from muva.inference.export import ParityError, export_onnx

    if fmt.lower() != "onnx":
        raise UsageError(f"unknown export format {fmt!r}; supported: onnx")
    report = export_onnx(checkpoint, out, opset=opset, masks=masks, dynamo=dynamo, check=check, quantize=quantize)
    console = Console(stderr=True)
    console.print(f"wrote {report.path} ({report.file_bytes / 2**20:.1f} MiB, opset {report.opset}, outputs {', '.join(report.outputs)}) in {report.seconds:.1f} s")
    if report.parity:
        p = report.parity
        ok = report.parity_ok
        line = f"parity on a batch of {p['batch']}: max |ONNX − PyTorch| features = {p['features_max_abs_diff']:.2e}"
        if report.quantized:
            line += f" (int8; lowest feature cosine to PyTorch {p['features_min_cosine']:.4f})"
        if "masks_max_abs_diff" in p:
            line += f", masks = {p['masks_max_abs_diff']:.2e}"
        console.print(("[green]" if ok else "[red]") + line + ("[/]"))
        if not ok:
            raise ParityError("ONNX output differs from PyTorch by more than 1e-4" + (" (int8: cosine ≤ 0.9)" if report.quantized else ""))
    if report.quantized:
        console.print("int8 features are close to, not equal to, PyTorch's: compare retrieval on your data with "
                      "`muva extract` (checkpoint and .onnx) + `muva evaluate-features FEATS FEATS` (docs/inference.md §5)")
    else:
        console.print("float32 runs at about PyTorch's CPU speed; `--quantize int8` is about 3× faster on CPUs with "
                      "int8 units (VNNI/AMX), with features close to PyTorch's (docs/inference.md §5)")


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)
    app.add_typer(search_app, name="search")
    app.command("export")(export)
