"""``muva data ...`` and ``muva protocol ...`` commands: look at datasets before training on them."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

data_app = typer.Typer(help="Inspect re-ID datasets.", no_args_is_help=True)
# ``muva protocol``: the training side attaches ``run`` to this same sub-app.
protocol_app = typer.Typer(help="Domain-generalisation protocols (named presets).", no_args_is_help=True)

ROOT_HELP = "Data root holding the datasets (default: $MUVA_DATA, else ./data)."
OPTION_HELP = (
    "Dataset option KEY=VALUE, repeatable: goes to the datasets whose parser takes KEY "
    "(e.g. split=3, variant=labeled, train_split=train+val, pattern=REGEX); DATASET.KEY=VALUE for one dataset only."
)


@data_app.command("summary")
def summary(
    spec: str = typer.Argument(..., metavar="DATASET", help="A dataset folder (Market-1501 layout, MARS layout or a synthetic domain), or a registered dataset name read under --root."),
    name: Optional[str] = typer.Option(None, "--name", help="Parse DATASET (a folder) as this registered dataset, e.g. dukemtmcreid."),
    root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
    dataset_option: Optional[List[str]] = typer.Option(None, "--dataset-option", "--option", "-O", metavar="KEY=VALUE", help=OPTION_HELP),
) -> None:
    """Print identities / images / cameras per split of a dataset.

    Exits 2 when the dataset cannot be read or cannot serve (an empty split, a split where
    no file name parses, an incomplete copy); what was read is still printed.
    """
    from rich.console import Console
    from rich.markup import escape

    from muva.data.datasets import UnusableDatasetError, dataset_options_for, load_dataset, open_dataset

    opts = dataset_options_for([name or spec], dataset_option)[0]  # a bad flag: a DatasetError, reported by the CLI
    console = Console()
    try:
        ds = load_dataset(name, spec, **opts) if name else open_dataset(spec, root, **opts)
    except UnusableDatasetError as exc:
        if exc.dataset is not None:  # show what was read; the CLI then reports the error itself
            console.print(exc.dataset.summary_table())
        raise
    console.print(ds.summary_table())
    for key in ("train_split", "variant", "split", "query_mode"):
        if key in ds.info:
            console.print(f"{key}: {ds.info[key]}", highlight=False, markup=False)
    if ds.info.get("skipped"):
        console.print(f"[yellow]{len(ds.info['skipped'])} image file(s) skipped (names do not parse), e.g. {escape(ds.info['skipped'][0])}[/]", highlight=False)


def _cell(found: int, official: int | None) -> tuple[str, bool]:
    if official is None:
        return f"{found:,} / —", False
    if found == official:
        return f"{found:,} / {official:,}", False
    return f"[bold red]{found:,} ≠ {official:,}[/]", True


def _missing_row(table, spec: str) -> None:
    from rich.markup import escape

    table.add_row(escape(spec), "—", "—", "—", "—", "[bold red]missing[/]")


@data_app.command("check")
def check(
    names: Optional[List[str]] = typer.Argument(None, metavar="DATASET", help="Dataset names or folders (default: every standard dataset)."),
    root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
    dataset_option: Optional[List[str]] = typer.Option(None, "--dataset-option", "--option", "-O", metavar="KEY=VALUE", help=OPTION_HELP),
    verify_images: bool = typer.Option(False, "--verify-images", help="Decode every image and list unreadable or empty files."),
    workers: int = typer.Option(8, "--workers", min=1, help="Threads decoding images with --verify-images."),
) -> None:
    """Compare datasets with their official numbers (found / official per split).

    Exits 1 when a dataset is missing, incomplete or has an empty split (or one where no
    file name parses), a number differs from the official one, or (with --verify-images)
    an image cannot be decoded.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from muva.data.datasets import (
        DATASETS,
        STANDARD_DATASETS,
        DatasetError,
        UnusableDatasetError,
        data_root,
        dataset_options_for,
        open_dataset,
    )
    from muva.data.datasets.layout import missing_root_message
    from muva.data.datasets.official import official_stats
    from muva.data.images import find_bad_images
    from muva.data.records import SPLITS, SplitStats

    console = Console()
    specs = list(names or STANDARD_DATASETS)  # the datasets whose registry record says "standard"
    per_spec = dataset_options_for(specs, dataset_option)
    table = Table(title="dataset check (found / official)")
    for col, just in (("dataset", "left"), ("split", "left"), ("identities", "right"), ("images", "right"), ("cameras", "right"), ("status", "left")):
        table.add_column(col, justify=just)
    problems: list[str] = []
    notes: list[str] = []
    opened = []
    droot = data_root(root)

    def needs_root(spec: str, opts: dict) -> bool:  # `custom` with path= or csv= reads no data root
        return spec in DATASETS and not (DATASETS.canonical(spec) == "custom" and (opts.get("path") or opts.get("csv")))

    root_missing = not droot.exists() and any(needs_root(s, o) for s, o in zip(specs, per_spec))
    if root_missing:
        problems.append(missing_root_message(droot))
    for spec, opts in zip(specs, per_spec):
        if root_missing and needs_root(spec, opts):
            _missing_row(table, spec)
            continue
        unusable = None
        try:
            ds = open_dataset(spec, root, **opts)
        except UnusableDatasetError as exc:
            if exc.dataset is None:
                _missing_row(table, spec)
                problems.append(str(exc))
                continue
            ds, unusable = exc.dataset, exc
            problems += [p.message for p in exc.problems]
        except DatasetError as exc:
            _missing_row(table, spec)
            problems.append(f"{spec}: {exc}")
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
            problem = unusable.status_of(split) if unusable else None
            if problem:
                status = f"[bold red]{problem}[/]"
            elif all(v is None for v in ref):
                status = "no reference"
            else:
                status = "[bold red]MISMATCH[/]" if bad else "[green]ok[/]"
            if bad and not problem:
                problems.append(f"{spec} {split}: found {st.num_pids} ids / {st.num_images} images / {st.num_cams} cams, official {ref}")
            table.add_row(escape(label) if i == 0 else "", split, *(c for c, _ in cells), status)
        if ds.info.get("skipped"):
            skipped = ds.info["skipped"]
            notes.append(f"{spec}: {len(skipped)} image file(s) skipped because their names do not parse: " + ", ".join(skipped[:5]) + (" …" if len(skipped) > 5 else ""))
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
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
        console.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False)
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

    from muva.data.protocols import PROTOCOLS, get_protocol

    protocols = [get_protocol(name)] if name else [PROTOCOLS.get(n) for n in PROTOCOLS.names()]  # unknown: RegistryError
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
