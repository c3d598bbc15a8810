"""``muva data ...`` and ``muva protocol ...`` commands: look at datasets before training on them."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

data_app = typer.Typer(help="Inspect re-ID datasets.", no_args_is_help=True)
# ``muva protocol``: the training side attaches ``run`` to this same sub-app.
protocol_app = typer.Typer(help="Domain-generalisation protocols (named presets).", no_args_is_help=True)

ROOT_HELP = "Data root holding the datasets (default: $MUVA_DATA, else ./data)."
OPTION_HELP = "Dataset option KEY=VALUE, repeatable (e.g. variant=labeled, train_split=train+val, split=3, pattern=REGEX)."
# What `muva data check` looks at when no name is given.
CHECK_DEFAULT = (
    "market1501", "dukemtmcreid", "msmt17", "cuhk03np-labeled", "cuhk03np-detected", "cuhk02",
    "cuhksysu", "viper", "prid2011", "grid", "ilids", "mars",
)


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        return text


def parse_options(pairs: Optional[List[str]]) -> dict:
    """``["split=3", "variant=labeled"]`` → ``{"split": 3, "variant": "labeled"}``."""
    from muva.cli import fail

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"option {pair!r} is not KEY=VALUE")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _options_for(spec: str, options: dict) -> dict:
    """The subset of ``options`` that the parser of ``spec`` accepts (all of them for paths)."""
    import inspect

    from muva.data.datasets import DATASETS

    if spec not in DATASETS:
        return {k: v for k, v in options.items() if k == "name"}
    params = inspect.signature(DATASETS.get(spec)).parameters
    return {k: v for k, v in options.items() if k in params}


@data_app.command("summary")
def summary(
    spec: str = typer.Argument(..., metavar="DATASET", help="A dataset folder (Market-1501 layout, MARS layout or a synthetic domain), or a registered dataset name read under --root."),
    name: Optional[str] = typer.Option(None, "--name", help="Parse DATASET (a folder) as this registered dataset, e.g. dukemtmcreid."),
    root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
) -> None:
    """Print identities / images / cameras per split of a dataset."""
    from rich.console import Console

    from muva.cli import fail
    from muva.data import DatasetError, load_dataset, open_dataset

    opts = parse_options(option)
    try:
        ds = load_dataset(name, spec, **opts) if name else open_dataset(spec, root, **opts)
    except (DatasetError, KeyError) as exc:
        raise fail(str(exc).strip('"'))
    console = Console()
    console.print(ds.summary_table())
    for key in ("train_split", "variant", "split", "query_mode"):
        if key in ds.info:
            console.print(f"{key}: {ds.info[key]}", highlight=False)
    if ds.info.get("skipped"):
        console.print(f"[yellow]{len(ds.info['skipped'])} image file(s) skipped (names do not parse), e.g. {ds.info['skipped'][0]}[/]", highlight=False)


def _cell(found: int, official: int | None) -> tuple[str, bool]:
    if official is None:
        return f"{found:,} / —", False
    if found == official:
        return f"{found:,} / {official:,}", False
    return f"[bold red]{found:,} ≠ {official:,}[/]", True


@data_app.command("check")
def check(
    names: Optional[List[str]] = typer.Argument(None, metavar="DATASET", help="Dataset names or folders (default: every standard dataset)."),
    root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", help=OPTION_HELP + " Applied to the datasets that accept it."),
    verify_images: bool = typer.Option(False, "--verify-images", help="Decode every image and list unreadable or empty files."),
    workers: int = typer.Option(8, "--workers", min=1, help="Threads decoding images with --verify-images."),
) -> None:
    """Compare datasets with their official numbers (found / official per split).

    Exits 1 when a dataset is missing, a number differs from the official one, or
    (with --verify-images) an image cannot be decoded.
    """
    from rich.console import Console
    from rich.table import Table

    from muva.data import DATASETS, DatasetError, data_root, open_dataset
    from muva.data.datasets.official import official_stats
    from muva.data.images import find_bad_images
    from muva.data.records import SPLITS, SplitStats

    console = Console()
    opts = parse_options(option)
    table = Table(title="dataset check (found / official)")
    for col, just in (("dataset", "left"), ("split", "left"), ("identities", "right"), ("images", "right"), ("cameras", "right"), ("status", "left")):
        table.add_column(col, justify=just)
    problems: list[str] = []
    notes: list[str] = []
    opened = []
    droot = data_root(root)
    specs = list(names or CHECK_DEFAULT)
    if not droot.exists() and any(spec in DATASETS for spec in specs):
        problems.append(f"the data root {droot} does not exist; pass --root or set MUVA_DATA")
    for spec in specs:
        if not droot.exists() and spec in DATASETS:
            table.add_row(spec, "—", "—", "—", "—", "[bold red]missing[/]")
            continue
        try:
            ds = open_dataset(spec, root, **_options_for(spec, opts))
        except (DatasetError, KeyError) as exc:
            table.add_row(spec, "—", "—", "—", "—", "[bold red]missing[/]")
            problems.append(f"{spec}: {str(exc).strip(chr(34))}")
            continue
        opened.append((spec, ds))
        official = official_stats(ds)
        label = spec if spec == ds.name else f"{spec} ({ds.name})"
        extra = [f"{k}={ds.info[k]}" for k in ("variant", "train_split", "split") if k in ds.info]
        if extra:
            label += "\n" + ", ".join(extra)
        for i, split in enumerate(SPLITS):
            st = SplitStats.of(ds.split(split))
            ref = (official or {}).get(split, (None, None, None))
            cells = [_cell(v, r) for v, r in zip((st.num_pids, st.num_images, st.num_cams), ref)]
            bad = any(b for _, b in cells)
            status = "no reference" if all(v is None for v in ref) else ("[bold red]MISMATCH[/]" if bad else "[green]ok[/]")
            if bad:
                problems.append(f"{spec} {split}: found {st.num_pids} ids / {st.num_images} images / {st.num_cams} cams, official {ref}")
            table.add_row(label if i == 0 else "", split, *(c for c, _ in cells), status)
        if ds.info.get("skipped"):
            skipped = ds.info["skipped"]
            notes.append(f"{spec}: {len(skipped)} image file(s) skipped because their names do not parse: " + ", ".join(skipped[:5]) + (" …" if len(skipped) > 5 else ""))
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if verify_images and opened:
        bad_files = find_bad_images([r.path for _, ds in opened for r in ds.train + ds.query + ds.gallery], workers=workers,
                                    progress=True, description="decoding images")
        if bad_files:
            console.print(f"[bold red]{len(bad_files)} unreadable or empty image(s):[/]")
            for path, reason in bad_files:
                console.print(f"  {path}: {reason}", highlight=False, markup=False)
            problems.append(f"{len(bad_files)} unreadable or empty image(s)")
        else:
            console.print("[green]every image decodes[/]")
    for problem in problems:
        console.print(f"[bold red]problem:[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(1)


def _short(spec: str) -> str:
    """``synth:/long/path/domain_0`` → ``synth:domain_0`` for display."""
    return f"synth:{Path(spec[6:]).name}" if spec.startswith("synth:") else spec


@protocol_app.command("list")
def protocol_list(
    name: Optional[str] = typer.Argument(None, metavar="PROTOCOL", help="One protocol (name, alias or synth:PATH); default: every preset."),
) -> None:
    """List the DG protocols with their settings, sources, targets and the paper's numbers."""
    from rich.console import Console
    from rich.table import Table

    from muva.cli import fail
    from muva.data import DatasetError
    from muva.data.protocols import PROTOCOLS, get_protocol

    try:
        protocols = [get_protocol(name)] if name else [PROTOCOLS.get(n) for n in PROTOCOLS.names()]
    except (KeyError, DatasetError) as exc:
        raise fail(str(exc).strip('"'))
    console = Console()
    for p in protocols:
        aliases = PROTOCOLS.aliases_of(p.name) if p.name in PROTOCOLS else []
        table = Table(title=f"{p.name}" + (f" (aliases: {', '.join(aliases)})" if aliases else "") + f" — {p.title}", title_justify="left")
        for col in ("setting", "sources (split)", "targets", "paper mAP / R1"):
            table.add_column(col, overflow="fold")
        for s in p.settings:
            sources = "\n".join(f"{_short(d)} ({sp})" for d, sp in s.sources)
            targets = "\n".join(_short(t.describe()) for t in s.targets)
            paper = "\n".join(f"{k}: {m:.1f} / {r:.1f}" for k, (m, r) in s.paper.items()) or "—"
            table.add_row(s.name, sources, targets, paper)
        console.print(table)
        if p.description:
            console.print(p.description, highlight=False)
        if p.reference:
            refs = ", ".join(f"{k} {m:.1f} / {r:.1f}" for k, (m, r) in p.reference.items())
            console.print(f"published averages (mAP / R1): {refs}", highlight=False)
        console.print()


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.add_typer(protocol_app, name="protocol")
