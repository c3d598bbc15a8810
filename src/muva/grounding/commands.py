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


class _DefaultRunGroup(TyperGroup):
    """A group where an unknown first word is a dataset: ``muva ground X`` = ``muva ground run X``."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


ground_app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Body-part boxes from a grounding expert (pose, prior, mllm, gdino, import): run, experts, stats, show, eval, merge, import-answers. "
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
    ctx: typer.Context,
    datasets: List[str] = typer.Argument(None, help="Dataset folder(s) (Market layout, synthetic domain, image folder) or registered name(s) with --root; "
                                         "with -c, default: the config's data.sources."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="An experiment config: its grounding: section (expert, options, caches, dir), "
                                          "data.sources, data.root and dataset options; flags given here win."),
    expert: Optional[str] = typer.Option(None, "--expert", "-e", help="prior | pose | mllm | gdino | import (or a plugin; default pose, or the config's); "
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
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: process only shard i of n (files .shard-i-of-n.sqlite; join with merge). "
                                        "Under torchrun the ranks shard by themselves."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per expert call and per transaction."),
    workers: int = typer.Option(2, "--workers", help="Threads decoding images ahead of the expert."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Stop after this many new images (trial runs)."),
    redo: bool = typer.Option(False, "--redo", help="Recompute images already in the cache."),
    nproc: int = typer.Option(1, "--nproc-per-node", min=1, help="Ground in N local processes (torchrun's launcher), one shard and one GPU "
                              "(cuda:LOCAL_RANK) each; rank 0 merges the shards into the cache. Same as torchrun --nproc_per_node N -m muva ground run ..."),
    keep_shards: bool = typer.Option(False, "--keep-shards", help="Under torchrun / --nproc-per-node: keep each process's shard file after the merge "
                                     "(default: deleted once the merged cache is written)."),
    estimate: bool = typer.Option(False, "--estimate", help="Ground a small sample into a temporary cache (the real one is not touched) and "
                                  "print crops/s and the projected time of this whole command."),
    estimate_images: int = typer.Option(32, "--estimate-images", min=1, help="With --estimate: images timed after the warm-up batch."),
    expert_option: Optional[List[str]] = typer.Option(
        None, "--expert-option", "-X", metavar="KEY=VALUE",
        help="Option of the chosen expert, repeatable (e.g. -X threads=2, -X model=tiny-random, -X masks=m.pkl); "
        "'muva ground experts' lists every expert's options.",
    ),
    pose_model: Optional[Path] = typer.Option(None, "--pose-model", help="= -X model_path=PATH (pose).", rich_help_panel=_DEPRECATED),
    threads: Optional[int] = typer.Option(None, "--threads", help="= -X threads=N (pose).", rich_help_panel=_DEPRECATED),
    model: Optional[str] = typer.Option(None, "--model", help="= -X model=ID (mllm, gdino).", rich_help_panel=_DEPRECATED),
    size: Optional[str] = typer.Option(None, "--size", help="= -X size=SIZE (mllm, gdino).", rich_help_panel=_DEPRECATED),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="= -X prompt=qwen|muva (mllm).", rich_help_panel=_DEPRECATED),
    answer_format: Optional[str] = typer.Option(None, "--answer-format", help="= -X answer_format=FORMAT (mllm).", rich_help_panel=_DEPRECATED),
    device: Optional[str] = typer.Option(None, "--device", help="= -X device=cuda|cpu|auto (mllm, gdino).", rich_help_panel=_DEPRECATED),
    masks: Optional[Path] = typer.Option(None, "--masks", help="= -X masks=PATH.pkl (import).", rich_help_panel=_DEPRECATED),
    grid: Optional[str] = typer.Option(None, "--grid", help="= -X grid=[ROWS,COLS] (import; here ROWSxCOLS).", rich_help_panel=_DEPRECATED),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Compute one box per part for every image and store them in a resumable cache.

    Under torchrun (torchrun --nproc_per_node N [--nnodes M ...] -m muva ground run ...) each process grounds the shard of
    its global rank on its own GPU; rank 0 merges the shards into the cache (shared output folder for several nodes).
    """
    import os

    from rich.console import Console

    from muva.grounding.cache import default_cache_path, parse_shard, shard_path
    from muva.grounding.distributed import torchrun_ranks
    from muva.grounding.experts import EXPERTS, options_dict
    from muva.grounding.run import parts_to_ground
    from muva.utils.console import is_secondary_rank

    launching = nproc > 1 and "RANK" not in os.environ and not estimate
    if launching and shard:
        raise UsageError("--shard and --nproc-per-node both split the images: give one of them")
    ranks = torchrun_ranks()
    if ranks is not None and shard:
        raise UsageError("--shard and torchrun both split the images: under torchrun each process takes the shard of its rank; "
                         "leave --shard out")
    if ranks is not None and estimate:
        raise UsageError("--estimate measures one process: run it without torchrun (its projection is for one device; "
                         "N identical devices take about 1/N of it)")
    console = Console(quiet=is_secondary_rank())  # under torchrun rank 0 speaks for all
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
        target = Path(out or _config_cache(spec, images.name, section) or default_cache_path(images.name, name))
        if shard_spec and out is None:
            target = shard_path(target, shard_spec)
        if ranks is not None:
            from muva.grounding.distributed import sharded_parts

            job_parts = sharded_parts(requested, target, ranks.world_size)
        else:
            job_parts = parts_to_ground(requested, target)
        jobs.append((images, target, job_parts))
    if launching:  # everything checked: start the processes that do the work
        from muva.utils.distributed import launch

        raise typer.Exit(launch(nproc, ["-m", "muva", *_relaunch_args(ctx, drop={"nproc"})]))
    built: dict = {}

    def expert_for(job_parts: tuple[str, ...], opts=options):
        if job_parts not in built:  # usually one expert: every cache gets the same parts
            built[job_parts] = _build(name, job_parts, options_dict(opts))
        return built[job_parts]

    run_kw = dict(batch_size=batch_size, workers=workers, limit=limit, redo=redo, progress=progress)
    try:
        if estimate:
            _print_estimate(console, name, jobs, expert_for, estimate_images, shard_spec, nproc, run_kw)
        elif ranks is not None:
            _run_on_ranks(console, ranks, jobs, options, expert_for, keep_shards, run_kw)
        else:
            from muva.grounding.run import ground_images

            for images, target, job_parts in jobs:
                summary = ground_images(images, expert_for(job_parts), target, shard=shard_spec, **run_kw)
                _print_summary(console, images, target, job_parts, summary)
            for exp in built.values():
                for line in exp.notes():
                    console.print(f"[yellow]{line}[/]")
    finally:
        for exp in built.values():
            exp.close()


def _print_summary(console, images, target: Path, job_parts, summary, processes: int = 1) -> None:
    """The summary line of one cache (with a note first when the run added parts to it)."""
    from rich.markup import escape

    if summary.widened_from:
        console.print(f"[yellow]note:[/] {escape(str(target))} held parts {', '.join(summary.widened_from)}; it now holds "
                      f"{', '.join(job_parts)} (its images were grounded again)", highlight=False)
    by = f" by {processes} processes" if processes > 1 else ""
    console.print(
        f"[bold]{escape(images.name)}[/]: {summary.in_shard:,} image(s) in scope, {summary.already_done:,} already cached, "
        f"{summary.processed:,} processed ({summary.unreadable} unreadable){by} in {summary.seconds:.1f}s "
        f"({summary.rate:.1f} img/s) → {escape(str(target))} (parts: {', '.join(job_parts)})", highlight=False
    )


def _run_on_ranks(console, ranks, jobs, options, expert_for, keep_shards: bool, run_kw: dict) -> None:
    """This process's share of a torchrun run: its shard of every cache, then (rank 0) the merge and the summary."""
    from rich.markup import escape

    from muva.grounding.cache import shard_path
    from muva.grounding.distributed import RankSession, ranked_options

    options = ranked_options(options, ranks)  # cuda:LOCAL_RANK for an expert on CUDA
    with RankSession(ranks, device=str(getattr(options, "device", "cpu"))) as session:
        for images, target, job_parts in jobs:
            session.ground(images, expert_for(job_parts, options), target, **run_kw)
        merged = session.finish(keep_shards=keep_shards)
    for job in merged:
        _print_summary(console, job.images, job.target, job.parts, job.summary, ranks.world_size)
        fate = "removed" if job.removed else "kept (--keep-shards)"
        pattern = shard_path(job.target, ("*", len(job.shards))).name
        console.print(f"  merged the {len(job.shards)} shard files ({escape(pattern)}) into it: {job.merged['added']:,} new, "
                      f"{job.merged['replaced']:,} replaced, {job.merged['total']:,} entries in all; the shard files are {fate}", highlight=False)
    for line in session.notes:
        console.print(f"[yellow]{escape(line)}[/]", highlight=False)


def _duration(seconds: Optional[float]) -> str:
    """``12.3s``, ``4 min 05s``, ``2 h 10 min``, ``3 d 4 h`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m:02d} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def _print_estimate(console, name: str, jobs, expert_for, sample: int, shard_spec, nproc: int, run_kw: dict) -> None:
    """``--estimate``: time a sample in a temporary cache and print the projection as a table."""
    from rich.markup import escape
    from rich.table import Table

    from muva.grounding.run import estimate_run

    est = estimate_run(jobs, expert_for, sample=sample, shard=shard_spec, batch_size=run_kw["batch_size"], workers=run_kw["workers"],
                       limit=run_kw["limit"], redo=run_kw["redo"])
    rate = est.rate
    where = "one process on this hardware" + (f", shard {shard_spec[0]}/{shard_spec[1]}" if shard_spec else "")
    table = Table(title=f"estimate: {escape(name)} expert, {where}", title_justify="left", title_style="bold")
    for col in ("dataset", "cache", "in scope", "cached", "to ground", "projected"):
        table.add_column(col, justify="left" if col in ("dataset", "cache") else "right")
    for row in est.rows:
        table.add_row(escape(row.name), escape(str(row.target)), f"{row.in_scope:,}", f"{row.cached:,}", f"{row.todo:,}",
                      _duration(row.todo / rate if rate > 0 else (0.0 if not row.todo else None)))
    if len(est.rows) > 1:
        table.add_row("[bold]all[/]", "", f"{sum(r.in_scope for r in est.rows):,}", f"{sum(r.cached for r in est.rows):,}",
                      f"{est.todo:,}", f"[bold]{_duration(est.projected_seconds)}[/]")
    console.print(table)
    if not est.todo:
        console.print("nothing left to ground: every image in scope is cached (--redo grounds them again)")
        return
    if est.rate_includes_warmup:
        measured = f"measured on the only {est.warmup} image(s) left, warm-up included"
    else:
        measured = f"measured on {est.sampled} image(s)"
    console.print(f"rate: [bold]{rate:.1f} crops/s[/], {measured} (batch {est.batch_size}, {est.workers} decode thread(s))", highlight=False)
    if not est.rate_includes_warmup:
        console.print(f"warm-up, not in the rate: building the expert {_duration(est.load_seconds)}, a first batch of {est.warmup} "
                      f"image(s) {_duration(est.warmup_seconds)}", highlight=False)
    line = f"projected: [bold]{_duration(est.projected_seconds)}[/] for {est.todo:,} image(s) left, in this one process"
    if nproc > 1 and est.projected_seconds is not None:
        line += f"; with --nproc-per-node {nproc} on {nproc} identical devices about {_duration(est.projected_seconds / nproc)}"
    else:
        line += "; N identical devices under torchrun take about 1/N of it"
    console.print(line, highlight=False)
    console.print("nothing was written to the caches (the sample went to a temporary cache, now deleted)")


def _relaunch_args(ctx: typer.Context, drop: set) -> list[str]:
    """The command line of this ``muva ... ground run`` again, for the processes --nproc-per-node starts.

    Only the options the user gave are repeated (in their long form), with the plugin
    imports of the root command first; ``drop`` names parameters left out.
    """
    root = ctx.find_root()
    args: list[str] = []
    for plugin in root.params.get("plugins") or []:
        args += ["--import", str(plugin)]
    args += ["ground", "run"]
    positional: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if param.name in drop or source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):  # (typer's own click enum: by name)
            continue
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            positional += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            if value:
                args.append(flag)
            elif param.secondary_opts:
                args.append(max(param.secondary_opts, key=len))
        elif getattr(param, "multiple", False):
            for v in value or []:
                args += [flag, str(v)]
        elif value is not None:
            args += [flag, str(value)]
    return args + positional


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


def register(app: typer.Typer) -> None:
    import muva.grounding.answers.commands  # noqa: F401 - adds 'muva ground import-answers' to ground_app
    import muva.grounding.review.commands  # noqa: F401 - adds experts, stats, show, eval, merge

    app.add_typer(ground_app, name="ground")
