"""``muva ground experts | stats | show | eval | merge``: the experts, and what a cache holds.

They join ``muva ground`` when :func:`muva.grounding.commands.register` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from muva.grounding.commands import _size, ground_app
from muva.utils.geometry import patch_grid
from muva.utils.errors import UsageError


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
    table = Table(title="boxes per part", caption="after the sources: why boxes fell back; 'empty': imported masks kept empty; "
                  "'asked joint / single': answered by one question about every part / about the part alone")
    table.add_column("part")
    sources = sorted({s for c in st["sources"].values() for s in c})
    reasons = sorted({r for c in st["reasons"].values() for r in c})
    for s in sources:
        table.add_column(f"from {s}", justify="right")
    for r in reasons:
        table.add_column(f"{r}", justify="right")
    ways = sorted({w for c in st.get("via", {}).values() for w in c})
    for w in ways:
        table.add_column(f"asked {w}", justify="right")
    for part in meta.get("parts", []):
        table.add_row(part, *[f"{st['sources'].get(part, {}).get(s, 0):,}" for s in sources], *[f"{st['reasons'].get(part, {}).get(r, 0):,}" for r in reasons],
                      *[f"{st['via'].get(part, {}).get(w, 0):,}" for w in ways])
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
