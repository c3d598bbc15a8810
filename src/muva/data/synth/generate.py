"""Planning and writing the synthetic benchmark: splits, identities, files, metadata.

Output (``generate(cfg, out)``)::

    out/config.yaml             resolved SynthConfig
    out/synth.json              list of domains and global facts (written last)
    out/domain_k/bounding_box_train/PPPP_cCsS_FFFFFF_NN.jpg
    out/domain_k/query/...      out/domain_k/bounding_box_test/...   (pid 0 = distractors)
    out/domain_k/parts.jsonl    one record per image: path, pid, camid, width, height,
                                boxes {head, upper_body, legs, shoes} (float pixels,
                                x1/y1 exclusive), occluded parts, view
                                (written and read by muva.data.synth.parts_file)
    out/domain_k/domain.json    the domain's style, cameras, identity ranges, counts
    out/domain_k/identities.jsonl   attributes of every identity (outfit twins marked)

Every image is a pure function of (seed, domain, identity, image index), so the bytes do
not depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muva.config import from_dict, save_config, to_dict
from muva.data.parts import PART_NAMES
from muva.data.synth.appearance import Identity, make_identities, random_identity, identity_rng
from muva.data.synth.config import SynthConfig
from muva.data.synth.parts_file import PARTS_FILE, PartsRecord, write_parts_jsonl
from muva.data.synth.pipeline import DomainRenderer, Job
from muva.data.synth.styles import DomainStyle, make_domain_style
from muva.utils.errors import MuvaError
from muva.utils.io import atomic_write_text
from muva.utils.progress import progress_bar

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
FORMAT = "muva-synth"
VERSION = 1
_FILENAME = re.compile(r"^(\d{4,})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


class SynthError(MuvaError, RuntimeError):
    """The output folder cannot be (re)generated as asked."""


def format_filename(pid: int, camid: int, frame: int, seq: int = 1, box: int = 1) -> str:
    """Market-1501 file name ``PPPP_cCsS_FFFFFF_NN.jpg`` (``camid`` 0-based, written 1-based)."""
    if not (0 <= pid <= 9999 and 0 <= camid <= 8 and 1 <= seq <= 9 and 0 <= frame <= 999999 and 0 <= box <= 99):
        raise ValueError(f"cannot encode pid={pid} camid={camid} seq={seq} frame={frame} box={box} in a Market file name")
    return f"{pid:04d}_c{camid + 1}s{seq}_{frame:06d}_{box:02d}.jpg"


def parse_filename(name: str) -> dict[str, int]:
    """Inverse of :func:`format_filename`: ``{"pid", "camid" (0-based), "seq", "frame", "box"}``."""
    m = _FILENAME.match(Path(name).name)
    if not m:
        raise ValueError(f"{name!r} is not a synthetic Market file name PPPP_cCsS_FFFFFF_NN.jpg")
    pid, cam, seq, frame, box = (int(g) for g in m.groups())
    return {"pid": pid, "camid": cam - 1, "seq": seq, "frame": frame, "box": box}


@dataclass
class DomainPlan:
    """Everything one domain will hold, before any pixel is drawn."""

    style: DomainStyle
    train_ids: list[Identity]
    test_ids: list[Identity]
    distractors: list[Identity]
    jobs: list[Job]

    @property
    def name(self) -> str:
        return self.style.name


def _train_cameras(rng: np.random.Generator, n_images: int, n_cams: int) -> list[int]:
    k = int(rng.integers(2, n_cams + 1)) if n_images >= 2 else 1
    cams = rng.choice(n_cams, size=min(k, n_images), replace=False)
    out = [int(cams[i % len(cams)]) for i in range(n_images)]
    return [out[i] for i in rng.permutation(n_images)]


def plan_domain(cfg: SynthConfig, k: int) -> DomainPlan:
    """Identities, camera assignment and file names of domain ``k``."""
    style = make_domain_style(cfg, k)
    n_tr, n_te = cfg.ids_per_domain, cfg.test_ids_per_domain
    base = k * cfg.ids_per_domain_total
    tr_keys, te_keys = list(range(n_tr)), list(range(n_tr, n_tr + n_te))
    train_ids = make_identities(cfg.seed, k, tr_keys, [base + 1 + i for i in tr_keys], season=style.season,
                                shared_fraction=cfg.shared_outfit_fraction)
    test_ids = make_identities(cfg.seed, k, te_keys, [base + 1 + i for i in te_keys], season=style.season,
                               shared_fraction=cfg.shared_outfit_fraction)
    d_keys = range(n_tr + n_te, n_tr + n_te + cfg.distractors_per_domain)
    distractors = [random_identity(identity_rng(cfg.seed, k, key), key, 0, style.season) for key in d_keys]

    jobs: list[Job] = []
    frame = [0]

    def add(split: str, ident: Identity, index: int, cam: int) -> None:
        frame[0] += 1
        name = format_filename(ident.pid, cam, frame=7 * frame[0] + 1, seq=1 + cam % 6)
        jobs.append(Job(SPLIT_FOLDERS[split], name, ident, index, cam))

    n_cams = cfg.num_cameras
    for ident in train_ids:
        rng = np.random.default_rng([cfg.seed, 40, k, ident.key])
        for i, cam in enumerate(_train_cameras(rng, cfg.images_per_id, n_cams)):
            add("train", ident, i, cam)
    gallery: list[tuple[Identity, int, int]] = []
    for ident in test_ids:
        rng = np.random.default_rng([cfg.seed, 41, k, ident.key])
        qcams = [int(c) for c in rng.choice(n_cams, size=cfg.queries_per_id, replace=False)]
        for i, cam in enumerate(qcams):
            add("query", ident, i, cam)
        others = [c for c in range(n_cams) if c not in qcams]
        # The first gallery image is under a camera no query of this identity uses.
        gcams = [int(rng.choice(others))] + [int(c) for c in rng.integers(0, n_cams, cfg.gallery_per_id - 1)]
        for j, cam in enumerate(gcams):
            gallery.append((ident, cfg.queries_per_id + j, cam))
    for ident in distractors:
        rng = np.random.default_rng([cfg.seed, 42, k, ident.key])
        gallery.append((ident, 0, int(rng.integers(n_cams))))
    for ident, index, cam in gallery:
        add("gallery", ident, index, cam)
    return DomainPlan(style, train_ids, test_ids, distractors, jobs)


# ----------------------------------------------------------------------------- workers
_RENDERERS: dict[tuple, DomainRenderer] = {}


def _render_chunk(cfg_dict: dict, style: DomainStyle, domain_dir: str, jobs: list[Job]) -> list[PartsRecord]:
    """Render and write ``jobs`` of one domain; returns their parts records (same order)."""
    key = (json.dumps(cfg_dict, sort_keys=True), style.index)
    renderer = _RENDERERS.get(key)
    if renderer is None:
        _RENDERERS.clear()
        renderer = _RENDERERS[key] = DomainRenderer(from_dict(SynthConfig, cfg_dict), style)
    records = []
    root = Path(domain_dir)
    for job in jobs:
        data, record, _ = renderer.render(job)
        (root / job.split / job.filename).write_bytes(data)
        records.append(record)
    return records


def _chunks(plans: list[DomainPlan], size: int):
    for k, plan in enumerate(plans):
        for i in range(0, len(plan.jobs), size):
            yield k, i, plan.jobs[i:i + size]


# ----------------------------------------------------------------------------- output folder
def _is_complete(out: Path, cfg: SynthConfig) -> bool:
    try:
        meta = json.loads((out / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    if meta.get("format") != FORMAT or meta.get("version") != VERSION or meta.get("config_dict") != to_dict(cfg):
        return False
    for dom in meta.get("domains", []):
        parts = out / dom["path"] / PARTS_FILE
        if not parts.is_file() or sum(1 for _ in parts.open()) != dom["num_images"]:
            return False
    return True


def _prepare(out: Path, cfg: SynthConfig, overwrite: bool) -> bool:
    """Make ``out`` ready; False when it already holds this exact benchmark."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    if not overwrite and _is_complete(out, cfg):
        return False
    if out.is_dir() and any(out.iterdir()):
        ours = [p for p in out.iterdir() if p.name in ("synth.json", "config.yaml", "montage.png")
                or (p.is_dir() and re.fullmatch(r"domain_\d+", p.name))]
        if not overwrite:
            what = "a synthetic benchmark made with a different config or an unfinished run" if ours else "other files"
            raise SynthError(f"{out} is not empty (it holds {what}); pass --overwrite to replace the benchmark "
                             "or choose another folder")
        if len(ours) != len(list(out.iterdir())):
            raise SynthError(f"{out} holds files that muva synth did not write; refusing to overwrite it")
        for p in ours:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return True


def _split_summary(jobs: list[Job], split: str) -> dict:
    sel = [j for j in jobs if j.split == SPLIT_FOLDERS[split]]
    return {"identities": len({j.identity.pid for j in sel}), "images": len(sel), "cameras": len({j.camid for j in sel})}


def _domain_meta(cfg: SynthConfig, plan: DomainPlan) -> dict:
    tr, te = plan.train_ids, plan.test_ids
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": plan.name,
        "index": plan.style.index,
        "seed": cfg.seed,
        "image_size": [cfg.width, cfg.height],
        "num_cameras": cfg.num_cameras,
        "parts": list(PART_NAMES),
        "box_format": "[x0, y0, x1, y1] float pixels, x1/y1 exclusive",
        "pids": {"train": [tr[0].pid, tr[-1].pid], "test": [te[0].pid, te[-1].pid], "distractor": 0},
        "splits": {s: _split_summary(plan.jobs, s) for s in SPLIT_FOLDERS},
        "num_images": len(plan.jobs),
        "outfit_twins": {"train": sum(i.twin_of > 0 for i in tr), "test": sum(i.twin_of > 0 for i in te)},
        "style": plan.style.to_json(),
    }


def generate(cfg: SynthConfig, out_dir: str | Path, *, workers: int = 1, overwrite: bool = False,
             progress: bool = True, chunk_size: int = 32) -> dict:
    """Generate the benchmark described by ``cfg`` under ``out_dir``; returns ``synth.json``'s content.

    When ``out_dir`` already holds a complete benchmark made with the same config, nothing
    is regenerated (the returned dict then has ``"skipped": True``).  ``workers`` > 1
    renders in that many processes; the bytes written are the same for any value.
    """
    out = Path(out_dir)
    if not _prepare(out, cfg, overwrite):
        meta = json.loads((out / "synth.json").read_text())
        meta["skipped"] = True
        return meta
    t0 = time.perf_counter()
    save_config(cfg, out / "config.yaml")
    plans = [plan_domain(cfg, k) for k in range(cfg.num_domains)]
    for plan in plans:
        root = out / plan.name
        for folder in SPLIT_FOLDERS.values():
            (root / folder).mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "domain.json", json.dumps(_domain_meta(cfg, plan), indent=1) + "\n")
        idents = [dict(i.to_json(), split=s) for s, group in (("train", plan.train_ids), ("test", plan.test_ids),
                                                             ("distractor", plan.distractors)) for i in group]
        atomic_write_text(root / "identities.jsonl", "".join(json.dumps(i) + "\n" for i in idents))

    cfg_dict = to_dict(cfg)
    results: dict[tuple[int, int], list[PartsRecord]] = {}
    chunks = list(_chunks(plans, chunk_size))
    with progress_bar(f"synth {cfg.num_domains} domains", total=sum(len(p.jobs) for p in plans), disable=not progress) as advance:
        if workers <= 1:
            for k, i, jobs in chunks:
                results[(k, i)] = _render_chunk(cfg_dict, plans[k].style, str(out / plans[k].name), jobs)
                advance(len(jobs))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_render_chunk, cfg_dict, plans[k].style, str(out / plans[k].name), jobs): (k, i, len(jobs))
                           for k, i, jobs in chunks}
                for fut in as_completed(futures):
                    k, i, n = futures[fut]
                    results[(k, i)] = fut.result()
                    advance(n)

    domains = []
    for k, plan in enumerate(plans):
        records = [r for (kk, i) in sorted(results) if kk == k for r in results[(kk, i)]]
        write_parts_jsonl(out / plan.name / PARTS_FILE, records)
        domains.append({"name": plan.name, "path": plan.name, "background": plan.style.background,
                        "season": plan.style.season, "num_images": len(records),
                        "pids": _domain_meta(cfg, plan)["pids"]})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "seed": cfg.seed,
        "image_size": [cfg.width, cfg.height],
        "num_cameras": cfg.num_cameras,
        "parts": list(PART_NAMES),
        "num_images": sum(d["num_images"] for d in domains),
        "domains": domains,
        "config": "config.yaml",
        "config_dict": cfg_dict,
    }
    # synth.json goes last: its presence marks a complete benchmark.
    atomic_write_text(out / "synth.json", json.dumps(meta, indent=1) + "\n")
    return dict(meta, seconds=round(time.perf_counter() - t0, 3))

