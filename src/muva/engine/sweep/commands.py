"""``muva sweep``: variants × seeds of one experiment, resumable, then a report with intervals.

``muva sweep -c CONFIG ...`` is short for ``muva sweep run -c CONFIG ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from muva.utils.errors import MuvaError, UsageError


class _DefaultRunGroup(TyperGroup):
    """``muva sweep -c X ...`` = ``muva sweep run -c X ...`` (the group's own --help stays)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(cls=_DefaultRunGroup, no_args_is_help=True,
                        help="Config variants × seeds, each a muva train run in its own folder (resumable), and a report "
                             "with 95 % intervals over seeds and over queries: run, report. "
                             "'muva sweep -c CONFIG ...' is short for 'muva sweep run -c CONFIG ...'.")


def _plan(config, overrides, file, seeds, vary, out, reference, protocol=None, settings=None):
    from muva.engine.sweep.plan import load_sweep_file, make_plan

    spec: dict = {}
    if file is not None:
        spec = load_sweep_file(file)
    config = config or spec.get("config")
    if config is None:
        raise UsageError("give the experiment config (-c CONFIG) or a sweep file (--file SWEEP.yaml) naming one")
    stem = Path(file).stem if file is not None else Path(config).stem
    return make_plan(config, [*spec.get("overrides", []), *(overrides or [])], out or Path("runs/sweep") / stem,
                     seeds=seeds if seeds is not None else spec.get("seeds", 1), vary=vary or [],
                     vary_values=spec.get("vary"), variants=spec.get("variants"),
                     reference=reference or spec.get("reference"), protocol=protocol or spec.get("protocol"),
                     settings=settings or spec.get("settings") or ())


def _print_plan(plan, states, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    where = f" × {len(plan.settings)} setting(s) of {plan.protocol}" if plan.settings else ""
    table = Table(title=f"sweep {escape(plan.out)}: {len(plan.variants)} variant(s) × {len(plan.seeds)} seed(s){escape(where)}")
    for col in ("variant", "overrides", "seeds", "done", "to run"):
        table.add_column(col)
    for v in plan.variants:
        mine = [s for s in states if s.run.variant == v.name]
        done = sum(s.status == "done" for s in mine)
        stale = sum(s.status == "stale" for s in mine)
        table.add_row(escape(v.name) + (" (reference)" if v.name == plan.reference else ""), escape(" ".join(v.overrides) or "—"),
                      ", ".join(map(str, plan.seeds)), str(done), f"{len(mine) - done}" + (f" ({stale} stale)" if stale else ""))
    console.print(table)
    if plan.settings:
        console.print("settings: " + ", ".join(plan.settings), highlight=False, markup=False)


@sweep_app.command("run")
def run_cmd(
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides for every run (as muva train)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Experiment config (YAML)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A sweep file (config, overrides, seeds, vary or variants, "
                                        "reference, protocol, settings)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", "-s", help="Number of seeds: the config's seed, seed+1, ... (default 1, or the file's)."),
    vary: Optional[List[str]] = typer.Option(None, "--vary", metavar="KEY=V1,V2", help="A grid axis, repeatable: every combination is a variant."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep folder (default runs/sweep/<config or file name>)."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Variant the others are compared with in the report."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Run every variant on every setting of this protocol "
                                           "(muva protocol list; synth:PATH, synth-loo:PATH)."),
    setting: Optional[List[str]] = typer.Option(None, "--setting", help="Only these settings of the protocol (repeatable)."),
    ground: bool = typer.Option(False, "--ground", help="First write the grounding caches the runs read that are missing "
                                "or lack parts (without it the sweep stops and lists the commands)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs in parallel (each gets cores/jobs threads)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what is done; run nothing."),
    rerun: bool = typer.Option(False, "--rerun", help="Train again the runs whose saved config differs from this sweep's."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report when the runs are done."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the overall progress bar."),
) -> None:
    """Run every variant × seed (finished runs are skipped, interrupted ones resume), then write the report."""
    from rich.console import Console

    from muva.engine.sweep.runner import grounding_needed, run_states, run_sweep

    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    console = Console()
    plan = _plan(config, overrides, file, seeds, vary, out, reference, protocol, setting)
    states = run_states(plan)
    _print_plan(plan, states, console)
    if dry_run:
        try:
            needed = grounding_needed(plan, [s.run for s in states if s.status != "done"])
        except MuvaError as exc:  # e.g. a dataset not downloaded yet: the plan is still worth seeing
            needed = []
            console.print(f"grounding not checked: {str(exc).splitlines()[0]}", highlight=False, markup=False)
        for _, _, cmd in needed:
            console.print(f"to ground first{' (--ground runs it)' if not ground else ''}: {cmd}", highlight=False, markup=False)
        for s in states:
            console.print(f"{s.status:8} {s.run.folder}: muva train {'-c ' + plan.config if plan.config else ''} "
                          f"{' '.join(s.run.overrides)}", highlight=False, markup=False)
        return

    def done(run, code, seconds):
        word = "finished" if code == 0 else f"FAILED (exit {code})"
        console.print(f"{run.folder}: {word} in {seconds:.0f} s", highlight=False, markup=False)

    run_sweep(plan, jobs=jobs, rerun=rerun, progress=progress, ground=ground, on_done=done)
    if report:
        _report(Path(plan.out), None, 1000, 0, console)


def _report(folder: Path, reference: Optional[str], bootstrap: int, seed: int, console, out: Optional[Path] = None) -> None:
    from muva.engine.sweep.aggregate import aggregate
    from muva.viz.sweep_report import write_sweep_report

    summary = aggregate(folder, reference=reference, n_boot=bootstrap, seed=seed)
    out = out or folder / "report"
    written, notes = write_sweep_report(summary, out)
    typer.echo(summary.markdown())
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    console.print(f"report → {out} ({', '.join(p.name for p in written)})", highlight=False, markup=False)


@sweep_app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., help="A sweep folder (holds sweep.json)."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Variant to compare with (default: the sweep's)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", "-b", help="Bootstrap draws over queries."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of the report files (default DIR/report)."),
) -> None:
    """Mean and 95 % intervals (over seeds; over queries by bootstrap) per variant and target, differences to the reference, plots."""
    from rich.console import Console

    if bootstrap < 1:
        raise UsageError(f"--bootstrap must be at least 1, not {bootstrap}")
    _report(folder, reference, bootstrap, seed, Console(), out)


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
