"""``muva doctor -c CONFIG``: check a training run's inputs before it starts.

Each check gives ``ok``, ``warn`` or ``FAIL`` and one line of detail:

* every source and target dataset opens and parses (the functions training uses), and a
  sample of the training images reads;
* every grounding cache the model's parts need exists and covers the training images;
* the CLIP weights can be had without a download (local file with a readable header, or
  open_clip's / the Hugging Face cache), else whether a download can happen;
* free disk space at ``output.dir`` and free memory against rough estimates;
* the state of the output folder (new, empty, or holding a run: ``--resume`` / ``--overwrite``);
* the GPU against ``device`` and ``amp``;
* with ``compile: true``, the compiler ``torch.compile`` needs (C++ on a CPU, Triton on a GPU).

Nothing is trained and no weights are loaded (the model is sized on torch's meta device).
:func:`run_checks` returns the rows; the command prints them and exits 1 when one FAILs.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import typer

from muva.engine.config import load_experiment
from muva.engine.runfolder import RUN_FILES, RunFolderError, prepare_run_folder
from muva.utils.errors import MuvaError

# muva.cli imports this module for every command (it registers ``muva doctor``), so what loads
# torch, open_clip or SQLite (the data, model and grounding modules) is imported inside the checks.

__all__ = ["Check", "run_checks", "doctor_cmd", "register"]

SAMPLE_IMAGES = 32  # training images opened per source (headers only)
GiB = 1024**3


@dataclass
class Check:
    """One row of the report."""

    check: str
    status: str  # "ok", "warn" or "FAIL"
    detail: str


def _size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _failure(exc: BaseException) -> str:
    return str(exc).strip().strip('"') or type(exc).__name__


# ----------------------------------------------------------------------------- data
def _check_sources(cfg, out: list[Check]):
    from muva.data.loader import scan_images  # lazy (torch): see the note at the top
    from muva.engine.data import build_sources, open_spec  # lazy (torch): see the note at the top

    if not cfg.data.sources:
        out.append(Check("sources", "FAIL", "data.sources is empty: name at least one training dataset (name or folder)"))
        return None
    opened = True
    for spec in cfg.data.sources:
        try:
            ds = open_spec(spec, cfg.data)
        except (MuvaError, OSError, ValueError, KeyError) as exc:
            out.append(Check(f"source {spec}", "FAIL", _failure(exc)))
            opened = False
            continue
        records = ds.records(cfg.data.source_split)
        step = max(1, len(records) // SAMPLE_IMAGES)
        bad = scan_images(records[::step][:SAMPLE_IMAGES], workers=1)
        detail = (f"{ds.name}: {len({r.pid for r in records}):,} identities, {len(records):,} images "
                  f"({cfg.data.source_split}), {ds.num_train_cams} cameras")
        if not records:
            out.append(Check(f"source {spec}", "FAIL", f"{detail}: no training images"))
        elif bad:
            path, why = next(iter(bad.items()))
            raise_ = cfg.data.on_bad_image == "raise"
            out.append(Check(f"source {spec}", "FAIL" if raise_ else "warn",
                             f"{detail}; {len(bad)} of {min(len(records), SAMPLE_IMAGES)} sampled images unreadable, "
                             f"e.g. {path} ({why}){'' if raise_ else ' — training skips them (data.on_bad_image=skip)'}"))
        else:
            out.append(Check(f"source {spec}", "ok", detail))
    if not opened:
        return None
    try:
        train = build_sources(cfg.data, check_images=False)
    except (MuvaError, OSError, ValueError, KeyError) as exc:
        out.append(Check("sources combined", "FAIL", _failure(exc)))
        return None
    out.append(Check("sources combined", "ok", f"{train.num_classes:,} identities, {len(train.records):,} images, "
                                               f"{train.num_cams} cameras"))
    return train


def _check_targets(cfg, out: list[Check]) -> int:
    """Returns the number of query + gallery images (for the estimates)."""
    from muva.engine.data import build_targets  # lazy (torch): see the note at the top

    if not cfg.data.targets:
        out.append(Check("targets", "warn", "data.targets is empty: the run trains but evaluates nothing"))
        return 0
    images = 0
    for spec in cfg.data.targets:
        try:
            (name, splits), = build_targets(cfg.data, [spec], check_images=False)
        except (MuvaError, OSError, ValueError, KeyError) as exc:
            out.append(Check(f"target {spec}", "FAIL", _failure(exc)))
            continue
        q, g = len(splits[0].query), len(splits[0].gallery)
        images += max(len(ds.query) + len(ds.gallery) for ds in splits)
        more = f", {len(splits)} splits" if len(splits) > 1 else ""
        out.append(Check(f"target {spec}", "ok", f"{name}: {q:,} query, {g:,} gallery images{more}"))
    return images


def _check_grounding(cfg, train, out: list[Check]) -> None:
    from muva.engine.data import ground_command, grounding_cache_for  # lazy (torch): see the note at the top
    from muva.grounding.cache import GroundingCache, GroundingCacheError  # lazy (SQLite): see the note at the top

    parts = list(cfg.model.parts)
    if not parts:
        out.append(Check("grounding", "ok", "not needed: model.parts is empty (global model)"))
        return
    if train is None:
        out.append(Check("grounding", "warn", "not checked: the sources did not open"))
        return
    missing_rule = cfg.grounding.missing
    for d, (spec, ds) in enumerate(zip(cfg.data.sources, train.sources)):
        name = f"grounding {spec}"
        cache_path = grounding_cache_for(spec, ds.name, cfg.grounding)
        if not cache_path.is_file():
            out.append(Check(name, "FAIL", f"grounding cache {cache_path} does not exist; create it with "
                                           f"`{ground_command(spec, cfg.data, cfg.grounding, cache_path, parts)}`"))
            continue
        paths = [r.path for r in train.records if r.dsetid == d]
        try:
            with GroundingCache.open(cache_path, readonly=True) as cache:
                lacking = [p for p in parts if p not in cache.parts()]
                absent = [p for p in paths if (e := cache.get(p)) is None or e.status != "ok"]
                expert = cache.meta.get("expert", "?")
        except GroundingCacheError as exc:
            out.append(Check(name, "FAIL", _failure(exc)))
            continue
        if lacking:
            out.append(Check(name, "FAIL", f"{cache_path} lacks the part(s) {', '.join(lacking)} of model.parts; "
                                           f"add them with `{ground_command(spec, cfg.data, cfg.grounding, cache_path, parts)}`"))
        elif not absent:
            out.append(Check(name, "ok", f"{cache_path} ({expert}) covers all {len(paths):,} training images"))
        else:
            share = f"{len(absent):,} of {len(paths):,} training images have no usable entry (e.g. {absent[0]})"
            if missing_rule == "error":
                out.append(Check(name, "FAIL", f"{share} in {cache_path}; resume "
                                               f"`{ground_command(spec, cfg.data, cfg.grounding, cache_path, parts)}`, "
                                               "or set grounding.missing=prior or skip"))
            else:
                use = "use the body prior" if missing_rule == "prior" else "are left out"
                out.append(Check(name, "warn", f"{share} in {cache_path}; they {use} (grounding.missing={missing_rule})"))


# ----------------------------------------------------------------------------- model and resources
def _model_size(cfg, num_classes: int) -> dict:
    """Parameters, trained parameters, feature dim and activation bytes of one training batch,
    sized on the meta device (no memory, no weights)."""
    import torch  # lazy: see the note at the top

    from muva.models import build_model  # lazy (torch, open_clip): see the note at the top
    from muva.models.clip_loading import resolve_clip_config  # lazy (torch, open_clip): see the note at the top

    with torch.device("meta"):
        model = build_model(cfg.model, 0, load_weights=False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text_width = int(model.text.token_embedding.weight.shape[1])
    per_id = len(cfg.model.granularities) * cfg.model.n_ctx * text_width + model.feature_dim  # prompts + classifier
    vision = resolve_clip_config(cfg.model, True)["vision_cfg"]
    width, layers = int(vision["width"]), int(vision["layers"])
    heads = max(1, width // int(vision.get("head_width", 64)))
    tokens = model.num_patches + 1 + len(cfg.model.parts)
    # per layer and image: ~20 saved width-sized tensors and 3 attention maps (a rough allowance)
    per_layer = 4 * (20 * tokens * width + 3 * heads * tokens * tokens)
    kept = 1 if cfg.model.grad_checkpointing else layers
    return {"params": total + num_classes * per_id, "trainable": trainable + num_classes * model.feature_dim,
            "dim": model.feature_dim, "activations": cfg.data.batch_size * per_layer * kept}


def _check_weights(cfg, out: list[Check]) -> None:
    from muva.models.clip_loading import ensure_weights_obtainable  # lazy (torch, open_clip): see the note at the top
    from muva.models.io import cached_clip_file, weights_file_problem  # lazy (torch, open_clip): see the note at the top

    mc = cfg.model
    try:
        kind, path = ensure_weights_obtainable(mc)
    except MuvaError as exc:
        out.append(Check("CLIP weights", "FAIL", _failure(exc)))
        return
    if kind == "none":
        out.append(Check("CLIP weights", "ok", "model.pretrained=none: random initialisation, nothing to load"))
        return
    if kind == "download":
        found = cached_clip_file(mc.backbone_name, str(mc.pretrained).strip().lower(), mc.cache_dir)
        if found is None:
            out.append(Check("CLIP weights", "warn", f"'{mc.pretrained}' is not in the local cache; it will be "
                                                     "downloaded when training starts (the network answers now)"))
            return
        path = found[1]
    problem = weights_file_problem(path)
    where = "local file" if kind == "file" else "in the local cache"
    if problem:
        out.append(Check("CLIP weights", "FAIL", f"{path}: {problem}; copy or download it again"))
    else:
        out.append(Check("CLIP weights", "ok", f"{where}: {path} ({_size(path.stat().st_size)}, header readable)"))


def _existing_parent(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # lazy: optional, not a muva dependency (only where /proc/meminfo is absent)

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def _want_cuda(cfg) -> tuple[bool, object]:
    import torch  # lazy: see the note at the top

    return cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()), torch


def _check_resources(cfg, train, target_images: int, out: list[Check]) -> None:
    try:
        size = _model_size(cfg, train.num_classes if train is not None else 0)
    except Exception as exc:  # noqa: BLE001 - a config the model cannot be built from
        out.append(Check("model", "FAIL", f"cannot size the model: {_failure(exc)}"))
        return
    params, trainable, dim = size["params"], size["trainable"], size["dim"]
    model_bytes = 4 * params
    train_images = len(train.records) if train is not None else 0
    feature_bytes = 4 * dim * (train_images + target_images)
    out.append(Check("model", "ok", f"{params / 1e6:.1f} M parameters ({trainable / 1e6:.1f} M trained), "
                                    f"{_size(model_bytes)} in fp32, features {dim}-d"))
    # disk: last.pt / best.pt (weights + optimiser state) and model.safetensors ≈ 3 model sizes, plus features
    need_disk = 3 * model_bytes + feature_bytes + 16 * 1024**2
    where = _existing_parent(Path(cfg.output.dir))
    free = shutil.disk_usage(where).free
    status = "FAIL" if free < need_disk else "warn" if free < 2 * need_disk else "ok"
    out.append(Check("disk space", status, f"{_size(free)} free at {where}, the run needs about {_size(need_disk)}"))
    # memory: weights, gradients and Adam's two moments of the trained part, features, loader workers
    on_gpu, _ = _want_cuda(cfg)
    activations = size["activations"] // (2 if on_gpu and cfg.amp != "none" else 1)
    training_state = model_bytes + 12 * trainable + activations
    need_ram = 2 * GiB + feature_bytes + cfg.data.num_workers * 512 * 1024**2 + (model_bytes if on_gpu else training_state)
    avail = _available_ram()
    if avail is None:
        out.append(Check("memory", "warn", f"cannot read the free memory; the run needs about {_size(need_ram)}"))
    else:
        status = "FAIL" if avail < need_ram else "warn" if avail < 1.5 * need_ram else "ok"
        out.append(Check("memory", status, f"{_size(avail)} available, the run needs about {_size(need_ram)} "
                                           f"({'host side' if on_gpu else 'training on the CPU'})"))
    _check_device(cfg, training_state, out)


def _check_device(cfg, training_state: int, out: list[Check]) -> None:
    on_gpu, torch = _want_cuda(cfg)
    amp = cfg.amp
    if not on_gpu:
        note = f"; amp={amp} is ignored on the CPU" if amp != "none" else ""
        if cfg.device == "auto":
            out.append(Check("device", "warn", f"device=auto and no CUDA GPU is visible: training runs on the CPU{note}"))
        else:
            out.append(Check("device", "warn" if note else "ok", f"cpu (device={cfg.device}){note}"))
        return
    if not torch.cuda.is_available():
        out.append(Check("device", "FAIL", f"device={cfg.device} but no CUDA GPU is visible "
                                           "(torch.cuda.is_available() is False); use device=cpu or device=auto"))
        return
    index = int(cfg.device.split(":", 1)[1]) if ":" in cfg.device else int(os.environ.get("LOCAL_RANK", "0") or 0)
    count = torch.cuda.device_count()
    if index >= count:
        out.append(Check("device", "FAIL", f"device={cfg.device} but only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})"))
        return
    name = torch.cuda.get_device_name(index)
    free, total = torch.cuda.mem_get_info(index)
    notes, status = [], "ok"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        notes.append("amp=bf16 is not supported by this GPU: use amp=fp16")
        status = "warn"
    need = training_state + GiB  # + the CUDA context and allocator slack
    if free < need:
        notes.append(f"only {_size(free)} of its memory is free, the run needs about {_size(need)}")
        status = "warn"
    out.append(Check("device", status, f"cuda:{index} {name}, {_size(free)} free of {_size(total)}, amp={amp}"
                                       + (f"; {'; '.join(notes)}" if notes else "")))


def _check_compile(cfg, out: list[Check]) -> None:
    if not cfg.compile:
        return
    from muva.models.compile import CompileError, check_compile_toolchain  # lazy (torch): see the note at the top

    device = "cuda" if _want_cuda(cfg)[0] else "cpu"
    try:
        check_compile_toolchain(device)
    except CompileError as exc:
        out.append(Check("compile", "FAIL", str(exc)))
        return
    out.append(Check("compile", "ok", f"torch.compile (mode {cfg.compile_mode}) has its toolchain on the {device}; "
                                      "the first stage-2 step compiles (about a minute or more)"))


def _check_output(cfg, out: list[Check]) -> None:
    folder = Path(cfg.output.dir)
    if folder.exists() and not folder.is_dir():
        out.append(Check("output folder", "FAIL", f"output.dir {folder} is a file, not a folder; choose another output.dir=..."))
        return
    parent = _existing_parent(folder)
    if not os.access(parent, os.W_OK):
        out.append(Check("output folder", "FAIL", f"{parent} is not writable; choose another output.dir=..."))
        return
    if not folder.exists():
        out.append(Check("output folder", "ok", f"{folder} does not exist yet (training creates it)"))
        return
    entries = sorted(e.name for e in folder.iterdir() if not e.name.startswith("."))
    if entries and not any(e in RUN_FILES for e in entries):
        out.append(Check("output folder", "FAIL", f"{folder} is not empty and holds no muva run ({', '.join(entries[:5])}"
                                                  f"{' …' if len(entries) > 5 else ''}); choose an empty or new output.dir=..."))
        return
    try:
        prepare_run_folder(folder, resume=False, overwrite=False, delete=False)  # only checks
    except RunFolderError as exc:
        out.append(Check("output folder", "warn", _failure(exc)))
        return
    out.append(Check("output folder", "ok", f"{folder} is empty"))


def run_checks(cfg) -> list[Check]:
    """Every check of an :class:`~muva.engine.config.ExperimentConfig`, in report order."""
    out: list[Check] = []
    train = _check_sources(cfg, out)
    target_images = _check_targets(cfg, out)
    _check_grounding(cfg, train, out)
    _check_weights(cfg, out)
    _check_resources(cfg, train, target_images, out)
    _check_compile(cfg, out)
    _check_output(cfg, out)
    return out


# ----------------------------------------------------------------------------- command
def doctor_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML to check (see configs/)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, as for muva train."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON instead of a table."),
) -> None:
    """Check a training config before a long run: data, grounding caches, CLIP weights, disk, memory, output folder, GPU.

    Exit code 0 when every check is ok or warn, 1 when one FAILs.  Nothing is trained or loaded.
    """
    # lazy: rich is loaded when the report is printed, not by every `muva` call
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    cfg = load_experiment(config, overrides or [])
    checks = run_checks(cfg)
    failed = sum(c.status == "FAIL" for c in checks)
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        colour = {"ok": "green", "warn": "yellow", "FAIL": "bold red"}
        table = Table(title=f"muva doctor · {cfg.name} ({config})")
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for c in checks:
            table.add_row(escape(c.check), f"[{colour[c.status]}]{c.status}[/]", escape(c.detail))
        console = Console()
        console.print(table)
        warned = sum(c.status == "warn" for c in checks)
        console.print(f"{len(checks) - failed - warned} ok, {warned} warn, {failed} FAIL"
                      + (" — fix the FAIL rows before training" if failed else ""), highlight=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
