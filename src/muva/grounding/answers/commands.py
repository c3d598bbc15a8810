"""``muva ground import-answers``: grounding answers made by any tool, anywhere → a grounding cache.

The library side is :mod:`muva.grounding.answers`; this module only parses flags and prints.  It adds
the command to ``muva ground`` when :func:`muva.grounding.commands.register` imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from muva.grounding.commands import ground_app
from muva.utils.errors import UsageError


@ground_app.command("import-answers")
def import_answers_command(
    files: List[Path] = typer.Argument(..., help="JSON Lines answer file(s): one object a line, e.g. "
                                       '{"image": "bounding_box_train/x.jpg", "part": "head", "answer": "[[380,10,730,170]]"}; '
                                       "with several files a later line wins."),
    fmt: str = typer.Option(..., "--format", "-f", help="Answer format: cogvlm | qwen2.5 | rel1000 | florence2 | gdino "
                            "(a line's \"format\" key overrides it)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="The dataset the answers are about: a folder or a registered name "
                                "with --root (as for 'muva ground run'); gives the images, their sizes and the cache keys."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root for registered dataset names (default $MUVA_DATA or ./data)."),
    dataset_option: Optional[List[str]] = typer.Option(None, "--dataset-option", "-O", metavar="KEY=VALUE",
                                                       help="Dataset option, repeatable (e.g. variant=labeled)."),
    splits: str = typer.Option("train,query,gallery", "--splits", help="Splits whose images the answers may name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cache file. Default: runs/grounding/<dataset>/<expert name>.sqlite."),
    parts: Optional[str] = typer.Option(None, "--parts", help="Comma-separated parts to import (default: the parts the lines name; "
                                        "head, upper_body, legs for answers naming every part). An existing cache keeps its parts."),
    expert_name: Optional[str] = typer.Option(None, "--expert-name", help="Source name of the imported boxes and the cache's "
                                              "expert (default answers-<format>)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write what was imported and the bad lines as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar while reading image headers."),
) -> None:
    """Turn grounding answers produced elsewhere (CogVLM in its own environment, ...) into a grounding cache:
    validated, with per-part fallback to the body prior, as 'muva ground run' writes."""
    import json
    import re

    from rich.console import Console
    from rich.markup import escape

    # lazy: command modules keep 'muva --help' fast (no PIL, datasets or parsers at import)
    from muva.data.datasets import dataset_options_for
    from muva.data.parts import check_parts  # lazy: as above
    from muva.grounding import answers as lib  # lazy: as above
    from muva.grounding.cache import default_cache_path  # lazy: as above
    from muva.grounding.parsers import format_key  # lazy: as above
    from muva.grounding.run import image_sets  # lazy: as above
    from muva.utils.io import atomic_write_text  # lazy: as above
    from muva.utils.progress import progress_bar  # lazy: as above

    console = Console()
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"answer file(s) not found: {', '.join(missing)}")
    try:
        canonical = format_key(fmt)
    except ValueError as exc:
        raise UsageError(f"--format: {exc}") from None
    if expert_name is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", expert_name):
        raise UsageError(f"--expert-name {expert_name!r}: use letters, digits, '.', '_' or '-' (it names the cache file)")
    name = expert_name or lib.default_expert_name(canonical)
    wanted = check_parts([p.strip() for p in parts.split(",") if p.strip()]) if parts else None  # a bad name is a PartTableError
    split_list = [s.strip() for s in splits.split(",") if s.strip()]
    note = lambda text: console.print(f"[yellow]note:[/] {escape(text)}; using the images that were read", highlight=False)  # noqa: E731
    images = image_sets([dataset], root, split_list, dataset_options_for([dataset], dataset_option), note)[0]
    target = out or default_cache_path(images.name, name)
    bar = lambda description, total: progress_bar(description, total=total, disable=not progress)  # noqa: E731
    rep = lib.import_answers(files, images, target, canonical, parts=wanted, expert=name, progress=bar)
    _print_report(console, rep)
    if report is not None:
        atomic_write_text(report, json.dumps(rep.to_dict(), indent=2))
        console.print(f"report → {escape(str(report))}", highlight=False)


def _print_report(console, rep) -> None:
    from rich.markup import escape
    from rich.table import Table

    from muva.grounding.answers import BAD_KINDS  # lazy: command modules keep 'muva --help' fast

    console.print(
        f"[bold]{escape(rep.dataset)}[/]: {rep.lines:,} line(s) read, {rep.good_lines:,} imported, "
        f"{sum(rep.bad.values()):,} bad; {rep.answered:,} of {rep.dataset_images:,} image(s) answered, "
        f"{rep.written:,} written ({rep.unreadable} unreadable) → {escape(rep.out)} "
        f"(expert {escape(rep.expert)}, parts: {', '.join(rep.parts)})", highlight=False)
    reasons = sorted({r for c in rep.part_counts.values() for r in c["fallbacks"]})
    table = Table(title="answers per part", caption="fallback columns: why a part got the body prior's box instead" if reasons else None)
    for col in ("part", "answered", "parsed", f"kept (from {rep.expert})", *(f"fallback {r}" for r in reasons)):
        table.add_column(escape(col), justify="left" if col == "part" else "right")
    for part, c in rep.part_counts.items():
        table.add_row(part, f"{c['answered']:,}", f"{c['parsed']:,}", f"{c['kept']:,}", *(f"{c['fallbacks'].get(r, 0):,}" for r in reasons))
    console.print(table)
    if rep.bad:
        bad = Table(title="bad lines (skipped)")
        examples = bool(rep.bad_examples)
        for col in ("kind", "lines", "first at", *(("e.g.",) if examples else ())):
            bad.add_column(col, justify="right" if col == "lines" else "left")
        for kind in BAD_KINDS:
            if kind in rep.bad:
                where = rep.bad_where.get(kind, [])
                bad.add_row(kind, f"{rep.bad[kind]:,}", escape(", ".join(where[:5]) + (" …" if rep.bad[kind] > 5 else "")),
                            *((escape(rep.bad_examples.get(kind, "")),) if examples else ()))
        console.print(bad)
    notes = []
    if rep.superseded:
        notes.append(f"{rep.superseded} answer(s) superseded by a later line for the same image and part (the later wins), "
                     f"first: {', '.join(rep.superseded_where[:3])}")
    if rep.unanswered:
        notes.append(f"{rep.unanswered:,} image(s) of {rep.dataset} have no answer and were not written (a later import adds them); "
                     "training stops on them unless grounding.missing is prior or skip")
    if rep.ignored_parts:
        notes.append("answers of parts not imported were ignored: " + ", ".join(f"{p} {n}" for p, n in rep.ignored_parts.items())
                     + " (add them with --parts)")
    if rep.by_name:
        notes.append(f"{rep.by_name:,} line(s) named their image by a path not under the dataset root; matched by file name")
    if rep.no_input_size:
        notes.append(f"{rep.no_input_size:,} qwen2.5 line(s) without \"input_size\": their pixel boxes were read as pixels of the crop "
                     "itself; give \"input_size\": [W, H] of the model's resized input when it differs")
    for line in notes:
        console.print(f"[yellow]note:[/] {escape(line)}", highlight=False)
