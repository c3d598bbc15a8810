"""``muva ground ...``: part boxes from a grounding expert, cached per dataset; stats, views, eval, merge.

``muva ground DATASET ...`` is short for ``muva ground run DATASET ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from muva.data.parts import PART_NAMES
from muva.utils.errors import UsageError
from muva.utils.geometry import patch_grid


class _DefaultRunGroup(TyperGroup):
    """A group where an unknown first word is a dataset: ``muva ground X`` = ``muva ground run X``."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


ground_app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Body-part boxes from a grounding expert (pose, prior, mllm, import): run, experts, stats, show, eval, merge. "
    "'muva ground DATASET ...' is short for 'muva ground run DATASET ...'.",
    no_args_is_help=True,
)


def _parts(text: str) -> tuple[str, ...]:
    from muva.data.parts import check_parts

    return check_parts([p.strip() for p in text.split(",") if p.strip()])  # a bad name is a PartTableError


def _size(text: str, flag: str = "--input-size") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise UsageError(f"{flag} must look like HxW (e.g. 256x128), not {text!r}") from None


_DEPRECATED = "Deprecated expert flags (use -X KEY=VALUE)"
# Old per-expert flags → the expert option they set.
_LEGACY_FLAGS = {"--pose-model": "model_path", "--threads": "threads", "--model": "model", "--size": "size", "--prompt": "prompt",
                 "--answer-format": "answer_format", "--device": "device", "--masks": "masks", "--grid": "grid"}


def _expert_options(name: str, items: List[str], legacy: dict, base: Optional[dict] = None):
    """The chosen expert's options: ``base`` (a config's ``grounding.options``), the deprecated flags,
    then ``-X KEY=VALUE`` (later wins); checked before any image is read."""
    from muva.grounding.experts import EXPERTS, expert_options, option_infos

    owners = {n: {i.name for i in option_infos(n)} for n in EXPERTS}
    for flag in legacy:
        if _LEGACY_FLAGS[flag] not in owners[name]:
            raise UsageError(f"{flag} is an option of the {' / '.join(n for n, keys in owners.items() if _LEGACY_FLAGS[flag] in keys)} "
                             f"expert, not of {name}; 'muva ground experts {name}' lists the options of {name}")
    options = expert_options(name, items, {**(base or {}), **{_LEGACY_FLAGS[flag]: v for flag, v in legacy.items()}})
    EXPERTS.get(name).check_options(options)
    return options


def _image_sets(datasets: List[str], root: Optional[Path], splits: List[str], option_pairs: Optional[List[str]], console,
                base_options: Optional[List[dict]] = None) -> list:
    """The images to ground of each dataset argument; ``-O`` pairs override a config's options."""
    from rich.markup import escape

    from muva.data.datasets import dataset_options_for
    from muva.grounding.run import image_sets

    per_spec = dataset_options_for(datasets, option_pairs)  # a bad option is a DatasetError: reported at the CLI edge
    options = [{**(base_options[i] if base_options else {}), **(o or {})} for i, o in enumerate(per_spec)]
    note = lambda text: console.print(f"[yellow]note:[/] {escape(text)}; grounding the images that were read", highlight=False)  # noqa: E731
    return image_sets(datasets, root, splits, options, note)


def _from_config(path: Path, datasets: List[str], expert: Optional[str], root: Optional[Path]):
    """What ``-c CONFIG`` supplies: the sources, the grounding section, the data root and options."""
    from muva.engine.config import load_experiment
    from muva.engine.data import spec_options

    cfg = load_experiment(path)
    specs = list(datasets) or list(cfg.data.sources)
    if not specs:
        raise UsageError(f"{path} names no data.sources; give the dataset(s) to ground as arguments")
    g = cfg.grounding
    same_expert = expert is None or expert == g.expert
    return (specs, g if same_expert else None, root or (Path(cfg.data.root) if cfg.data.root else None),
            [spec_options(s, cfg.data) for s in specs], tuple(cfg.model.parts))


@ground_app.command("run")
def run(
    datasets: List[str] = typer.Argument(None, help="Dataset folder(s) (Market layout, synthetic domain, image folder) or registered name(s) with --root; "
                                         "with -c, default: the config's data.sources."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="An experiment config: its grounding: section (expert, options, caches, dir), "
                                          "data.sources, data.root and dataset options; flags given here win."),
    expert: Optional[str] = typer.Option(None, "--expert", "-e", help="prior | pose | mllm | import (or a plugin; default pose, or the config's); "
                                         "'muva ground experts' lists them with their options."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root for registered dataset names (default $MUVA_DATA or ./data)."),
    dataset_option: Optional[List[str]] = typer.Option(
        None, "--dataset-option", "-O", metavar="KEY=VALUE",
        help="Dataset option, repeatable (e.g. variant=labeled, split=3); DATASET.KEY=VALUE for one dataset only.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cache file (one dataset only). Default: runs/grounding/<dataset>/<expert>.sqlite "
                                       "(with -c: the config's grounding.caches / grounding.dir)."),
    parts: Optional[str] = typer.Option(None, "--parts", help=f"Comma-separated parts ({', '.join(PART_NAMES)}); default: every part the expert "
                                        "can ground (a cache serves any subset). An existing cache keeps its parts and gains the new ones."),
    splits: str = typer.Option("train,query,gallery", "--splits", help="Splits to ground (MUVA trains on train only)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: process only shard i of n (files .shard-i-of-n.sqlite; join with merge)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per expert call and per transaction."),
    workers: int = typer.Option(2, "--workers", help="Threads decoding images ahead of the expert."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Stop after this many new images (trial runs)."),
    redo: bool = typer.Option(False, "--redo", help="Recompute images already in the cache."),
    expert_option: Optional[List[str]] = typer.Option(
        None, "--expert-option", "-X", metavar="KEY=VALUE",
        help="Option of the chosen expert, repeatable (e.g. -X threads=2, -X model=tiny-random, -X masks=m.pkl); "
        "'muva ground experts' lists every expert's options.",
    ),
    pose_model: Optional[Path] = typer.Option(None, "--pose-model", help="= -X model_path=PATH (pose).", rich_help_panel=_DEPRECATED),
    threads: Optional[int] = typer.Option(None, "--threads", help="= -X threads=N (pose).", rich_help_panel=_DEPRECATED),
    model: Optional[str] = typer.Option(None, "--model", help="= -X model=ID (mllm).", rich_help_panel=_DEPRECATED),
    size: Optional[str] = typer.Option(None, "--size", help="= -X size=7b|3b (mllm).", rich_help_panel=_DEPRECATED),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="= -X prompt=qwen|muva (mllm).", rich_help_panel=_DEPRECATED),
    answer_format: Optional[str] = typer.Option(None, "--answer-format", help="= -X answer_format=FORMAT (mllm).", rich_help_panel=_DEPRECATED),
    device: Optional[str] = typer.Option(None, "--device", help="= -X device=cuda|cpu|auto (mllm).", rich_help_panel=_DEPRECATED),
    masks: Optional[Path] = typer.Option(None, "--masks", help="= -X masks=PATH.pkl (import).", rich_help_panel=_DEPRECATED),
    grid: Optional[str] = typer.Option(None, "--grid", help="= -X grid=[ROWS,COLS] (import; here ROWSxCOLS).", rich_help_panel=_DEPRECATED),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Compute one box per part for every image and store them in a resumable cache."""
    from rich.console import Console
    from rich.markup import escape

    from muva.grounding.cache import default_cache_path, parse_shard, shard_path
    from muva.grounding.experts import EXPERTS, options_dict
    from muva.grounding.run import ground_images, parts_to_ground

    console = Console()
    datasets = list(datasets or [])
    section, base_opts, model_parts = None, None, ()
    if config is not None:
        datasets, section, root, base_opts, model_parts = _from_config(config, datasets, expert, root)
    elif not datasets:
        raise UsageError("give the dataset(s) to ground, or -c CONFIG to ground the sources of an experiment config")
    name = EXPERTS.canonical(expert or (section.expert if section else "pose"))
    shard_spec = parse_shard(shard)
    if out is not None and len(datasets) > 1:
        raise UsageError("--out names one cache file; with several datasets leave it out (each gets runs/grounding/<dataset>/<expert>.sqlite)")
    legacy = {"--pose-model": pose_model, "--threads": threads, "--model": model, "--size": size, "--prompt": prompt,
              "--answer-format": answer_format, "--device": device, "--masks": masks, "--grid": None if grid is None else _size(grid, "--grid")}
    options = _expert_options(name, expert_option or [], {flag: v for flag, v in legacy.items() if v is not None},
                              section.options if section else None)
    requested = _parts(parts) if parts else tuple(EXPERTS.get(name).default_parts(options))
    lacking = [p for p in model_parts if p not in requested]
    if lacking:
        raise UsageError(f"{config} trains with model.parts {', '.join(model_parts)}, but {', '.join(lacking)} would not be grounded; "
                         f"add {'it' if len(lacking) == 1 else 'them'} to --parts")
    sets = _image_sets(datasets, root, [s.strip() for s in splits.split(",") if s.strip()], dataset_option, console, base_opts)
    jobs = []
    for spec, images in zip(datasets, sets):
        target = out or _config_cache(spec, images.name, section) or default_cache_path(images.name, name)
        if shard_spec and out is None:
            target = shard_path(target, shard_spec)
        jobs.append((images, Path(target), parts_to_ground(requested, target)))
    built: dict = {}
    try:
        for images, target, job_parts in jobs:
            if job_parts not in built:  # usually one expert: every cache gets the same parts
                built[job_parts] = _build(name, job_parts, options_dict(options))
            exp = built[job_parts]
            summary = ground_images(images, exp, target, shard=shard_spec, batch_size=batch_size, workers=workers, limit=limit, redo=redo, progress=progress)
            if summary.widened_from:
                console.print(f"[yellow]note:[/] {escape(str(target))} held parts {', '.join(summary.widened_from)}; it now holds "
                              f"{', '.join(job_parts)} (its images were grounded again)", highlight=False)
            console.print(
                f"[bold]{images.name}[/]: {summary.in_shard:,} image(s) in scope, {summary.already_done:,} already cached, "
                f"{summary.processed:,} processed ({summary.unreadable} unreadable) in {summary.seconds:.1f}s "
                f"({summary.rate:.1f} img/s) → {escape(str(target))} (parts: {', '.join(job_parts)})", highlight=False
            )
        for exp in built.values():
            for line in exp.notes():
                console.print(f"[yellow]{line}[/]")
    finally:
        for exp in built.values():
            exp.close()


def _build(name: str, parts: tuple[str, ...], options: dict):
    """The expert, or one message when its model or package cannot be had."""
    from muva.grounding.experts import build_expert
    from muva.utils.errors import MuvaError

    try:
        return build_expert(name, parts=parts, **options)
    except MuvaError:
        raise
    except (OSError, ImportError, RuntimeError, ValueError) as exc:  # a missing model file or package, a bad pickle
        raise UsageError(f"cannot build the {name} expert: {exc}") from None


def _config_cache(spec: str, dataset_name: str, section) -> Optional[Path]:
    """The cache a config's training reads for ``spec`` (None without a config, or for another expert)."""
    if section is None:
        return None
    from muva.engine.data import grounding_cache_for

    return grounding_cache_for(spec, dataset_name, section)


@ground_app.command("experts")
def experts(
    name: Optional[str] = typer.Argument(None, help="One expert (default: all)."),
) -> None:
    """List the grounding experts and their options (set with 'muva ground run -e NAME -X KEY=VALUE')."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from muva.grounding.experts import EXPERTS, option_infos

    names = [EXPERTS.canonical(name)] if name else EXPERTS.names()  # an unknown name is a RegistryError
    con = Console()
    for n in names:
        aliases = EXPERTS.aliases_of(n)
        title = f"{n}" + (f" (also: {', '.join(aliases)})" if aliases else "") + f": {EXPERTS.summaries.get(n, '')}"
        infos = option_infos(n)
        if not infos:
            con.print(f"[bold]{escape(title)}[/]\n  no options\n", highlight=False)
            continue
        table = Table(title=escape(title), title_justify="left", title_style="bold")
        for col in ("option", "type", "default", "help"):
            table.add_column(col)
        for i in infos:
            table.add_row(i.name, escape(i.type), escape(i.default), escape(i.help))
        con.print(table)


@ground_app.command("stats")
def stats(
    cache: Path = typer.Argument(..., help="A cache file written by muva ground run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Per part: how many boxes came from each expert, and why the others fell back."""
    import json

    from rich.console import Console
    from rich.table import Table

    from muva.grounding.cache import GroundingCache

    with GroundingCache.open(cache, readonly=True) as c:
        st, meta = c.stats(), c.meta
    if as_json:
        typer.echo(json.dumps({"meta": meta, **st}, indent=2))
        return
    con = Console()
    con.print(f"[bold]{cache}[/]: expert {meta.get('expert')}, dataset {meta.get('dataset')}, root {meta.get('root')}")
    con.print(f"entries {st['entries']:,}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st["statuses"].items())))
    if st["errors"]:
        con.print("unreadable: " + ", ".join(f"{k} {v}" for k, v in st["errors"].items()))
    table = Table(title="boxes per part", caption="after the sources: why boxes fell back; 'empty': imported masks kept empty")
    table.add_column("part")
    sources = sorted({s for c in st["sources"].values() for s in c})
    reasons = sorted({r for c in st["reasons"].values() for r in c})
    for s in sources:
        table.add_column(f"from {s}", justify="right")
    for r in reasons:
        table.add_column(f"{r}", justify="right")
    for part in meta.get("parts", []):
        table.add_row(part, *[f"{st['sources'].get(part, {}).get(s, 0):,}" for s in sources], *[f"{st['reasons'].get(part, {}).get(r, 0):,}" for r in reasons])
    con.print(table)


@ground_app.command("show")
def show(
    cache: Path = typer.Argument(..., help="A cache file written by muva ground run."),
    out: Path = typer.Option(Path("runs/grounding/show.png"), "--out", "-o", help="PNG to write."),
    count: int = typer.Option(24, "--count", "-n", help="Number of images."),
    select: str = typer.Option("random", "--select", help="random | first | fallback (images with at least one fallback part)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random selection."),
    columns: int = typer.Option(8, "--columns", help="Tiles per row."),
    input_size: str = typer.Option("256x128", "--input-size", help="Model input HxW for the patch masks."),
    stride: int = typer.Option(16, "--stride", help="Patch stride."),
    min_fraction: float = typer.Option(0.5, "--min-fraction", help="Share of a patch inside a box to belong to the part."),
    scale: int = typer.Option(1, "--scale", help="Enlarge tiles by this factor."),
) -> None:
    """Write a PNG grid of images with their part boxes and patch masks overlaid."""
    import random

    from rich.console import Console

    from muva.grounding.cache import GroundingCache
    from muva.grounding.masks import boxes_to_patch_masks
    from muva.grounding.run import load_image
    from muva.grounding.views import render_grid, save_png

    hw = _size(input_size)
    with GroundingCache.open(cache, readonly=True) as c:
        parts, root = c.parts(), c.root
        entries = [e for e in c if e.status == "ok"]
    if select == "fallback":
        entries = [e for e in entries if any(b.reason for b in e.boxes.values())]
    elif select == "random":
        random.Random(seed).shuffle(entries)
    elif select != "first":
        raise UsageError(f"--select must be random, first or fallback, not {select!r}")
    items = []
    for e in entries:
        if len(items) >= count:
            break
        path = Path(e.path) if Path(e.path).is_absolute() or root is None else root / e.path
        img, err = load_image(str(path))
        if img is None:
            continue
        m = e.patch_masks(parts, patch_grid(hw, stride=stride))
        if m is None:
            m = boxes_to_patch_masks(e.boxes, img.size, hw, stride, parts, min_fraction)
        items.append((img, e.boxes, m, Path(e.path).name))
    if not items:
        raise UsageError(f"no readable image to show from {cache} (selection {select!r}; images are looked up under {root})")
    save_png(render_grid(items, parts, input_size=hw, stride=stride, columns=columns, scale=scale), out)
    Console().print(f"wrote {out} ({len(items)} images)")


@ground_app.command("eval")
def evaluate(
    caches: List[Path] = typer.Argument(..., help="Cache file(s) to score (one row block per cache)."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth: parts.jsonl of muva synth."),
    include_occluded: bool = typer.Option(False, "--include-occluded", help="Also score parts marked occluded."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
) -> None:
    """Score caches against ground-truth boxes: mean IoU per part and share with IoU ≥ 0.5."""
    import json

    from rich.console import Console
    from rich.table import Table

    from muva.grounding.evaluate import score_cache

    table = Table(title=f"IoU against {gt}")
    for col in ("cache", "expert", "matched", "part", "mean IoU", "IoU≥0.5", "own boxes", "own mean IoU"):
        table.add_column(col, justify="left" if col in ("cache", "expert", "part") else "right")
    results = []
    for cache in caches:
        scores, info = score_cache(cache, gt, include_occluded=include_occluded)
        if info["matched"] == 0:
            raise UsageError(f"no image of {gt} is in {cache}: ground the same dataset folder that holds this parts.jsonl")
        for i, s in enumerate(scores.values()):
            table.add_row(
                str(cache) if i == 0 else "", str(info["expert"]) if i == 0 else "", f"{info['matched']}/{info['truth']}" if i == 0 else "",
                s.part, f"{s.mean_iou:.3f}", f"{100 * s.hit_rate:.1f}%", f"{s.own_n}", f"{s.own_mean_iou:.3f}",
            )
        mean = sum(s.mean_iou for s in scores.values()) / max(1, len(scores))
        table.add_row("", "", "", "[bold]mean[/]", f"[bold]{mean:.3f}[/]", "", "", "")
        results.append({"cache": str(cache), **info, "parts": [s.to_dict() for s in scores.values()], "mean_iou": mean})
    Console().print(table)
    if json_out:
        from muva.utils.io import atomic_write_text

        atomic_write_text(json_out, json.dumps(results, indent=2))


@ground_app.command("merge")
def merge(
    out: Path = typer.Argument(..., help="The joined cache file (created or extended)."),
    shards: List[Path] = typer.Argument(..., help="Shard cache files to join."),
) -> None:
    """Join shard caches (written with --shard i/n) into one cache."""
    from rich.console import Console

    from muva.grounding.cache import merge_caches

    counts = merge_caches(out, shards)
    Console().print(
        f"merged {counts['inputs']} file(s) into {out}: {counts['added']:,} added, {counts['upgraded']} upgraded "
        f"(unreadable → ok), {counts['duplicates']} duplicate(s) skipped; {counts['total']:,} entries in all"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(ground_app, name="ground")
