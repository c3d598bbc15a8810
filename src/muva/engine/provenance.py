"""What a finished run was made from, so that its numbers are only reused for the same inputs.

:func:`run_provenance` fingerprints an experiment config before it trains:

* ``config``: the resolved config tree (:func:`muva.config.to_dict`);
* ``weights``: what ``model.pretrained`` names: ``none``, an open_clip tag (the tag names one
  published file; the downloaded copy is not read), or a local file (size + SHA-256 of its
  whole content);
* ``grounding_caches``: for a model with part tokens, every source's grounding cache
  (path, size, SHA-256 of the whole file), or ``missing``;
* ``image_lists``: the training images (source, path relative to its dataset root, label,
  camera) and every target's query/gallery lists, as counts plus a SHA-256 of the sorted
  lines.  Image *contents* are not read.

:func:`provenance_diff` lists what differs between two of them (``["stage2.epochs: 60 → 10",
...]``), leaving out :data:`IGNORED_KEYS`: config keys that cannot change the numbers.
A digest of everything compared is :func:`provenance_hash`; :func:`config_hash` is the
same for a config alone (config tree + weights), used to label result rows.

Whole-file digests are computed once per file and process (keyed by path, size and
modification time).  Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from muva._version import __version__
from muva.config import config_diff, to_dict, upgrade_tree
from muva.engine.config import NON_RESULT_KEYS, ExperimentConfig
from muva.utils.io import atomic_write_text

__all__ = ["IGNORED_KEYS", "PROVENANCE_FILE", "run_provenance", "provenance_diff", "provenance_hash", "config_hash",
           "weights_fingerprint", "file_fingerprint", "read_provenance", "write_provenance"]

PROVENANCE_FILE = "provenance.json"
VERSION = 1

#: Config keys (or sections) that cannot change a run's numbers, left out of every comparison:
#: the run's name (a label) and folder, logging and progress display, how often last.pt is
#: written, whether best.pt is kept besides (the reported model is the last epoch's),
#: data-loader worker processes (every sample's augmentation is seeded by its index) and the
#: download folder of pretrained tags (the tag itself is compared).
IGNORED_KEYS = NON_RESULT_KEYS  # the one list, in muva.engine.config (its order is part of config_hash)

#: The sections of a provenance that are compared (``config`` minus :data:`IGNORED_KEYS`).
COMPARED = ("config", "weights", "grounding_caches", "image_lists")

_DIGESTS: dict[tuple[str, int, int], str] = {}
_HEX = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------------- pieces
def _sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a file, or ``{"path", "missing": True}``."""
    p = Path(path).expanduser()
    if not p.is_file():
        return {"path": str(path), "missing": True}
    return {"path": str(path), "size": p.stat().st_size, "sha256": _sha256_file(p)}


def weights_fingerprint(model_cfg) -> dict[str, Any]:
    """What ``model.pretrained`` starts from (a local file wins over a tag of the same spelling)."""
    spec = str(model_cfg.pretrained).strip()
    if not model_cfg.uses_pretrained:
        return {"kind": "none"}
    if Path(spec).expanduser().is_file():
        return {"kind": "file", **file_fingerprint(spec)}
    if os.sep in spec or spec.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return {"kind": "file", "path": spec, "missing": True}
    return {"kind": "tag", "backbone": model_cfg.backbone_name, "tag": spec.lower()}


def _relative(path: str, root) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _digest_lines(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def _image_lists(data_cfg) -> tuple[dict[str, Any], Any]:
    """Counts and digests of the training and target lists; also returns the opened sources."""
    from muva.engine.data import build_sources, build_targets  # lazy: it imports torch, and this module promises none

    train = build_sources(data_cfg, check_images=False)
    roots = [ds.root for ds in train.sources]
    lines = [f"{r.dsetid}\t{_relative(r.path, roots[r.dsetid])}\t{r.pid}\t{r.camid}" for r in train.records]
    out: dict[str, Any] = {"train": {"sources": [ds.name for ds in train.sources], "images": len(train.records),
                                     "identities": train.num_classes, "cameras": train.num_cams,
                                     "sha256": _digest_lines(lines)}}
    targets: dict[str, Any] = {}
    for label, splits in build_targets(data_cfg, check_images=False):
        q = g = 0
        tlines = []
        for k, ds in enumerate(splits):
            q, g = q + len(ds.query), g + len(ds.gallery)
            for part, recs in (("query", ds.query), ("gallery", ds.gallery)):
                tlines += [f"{k}\t{part}\t{_relative(r.path, ds.root)}\t{r.pid}\t{r.camid}" for r in recs]
        targets[label] = {"splits": len(splits), "query": q, "gallery": g, "sha256": _digest_lines(tlines)}
    out["targets"] = targets
    return out, train


def grounding_caches(cfg, train=None) -> dict[str, dict[str, Any]]:
    """``{source spec: fingerprint}`` of the caches a config trains with (empty without part tokens)."""
    from muva.engine.data import build_sources, grounding_cache_for  # lazy: it imports torch, and this module promises none

    if not cfg.model.parts:
        return {}
    train = train if train is not None else build_sources(cfg.data, check_images=False)
    return {spec: file_fingerprint(grounding_cache_for(spec, ds.name, cfg.grounding))
            for spec, ds in zip(cfg.data.sources, train.sources)}


# ----------------------------------------------------------------------------- provenance
def _drop(tree: Any, ignore: Iterable[str], key: str = "") -> Any:
    if not isinstance(tree, Mapping):
        return tree
    ignore = tuple(ignore)
    out = {}
    for k, v in tree.items():
        sub = f"{key}.{k}" if key else str(k)
        if not any(sub == i or sub.startswith(i + ".") for i in ignore):
            out[k] = _drop(v, ignore, sub)
    return out


def _short_hash(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:8]


def provenance_hash(prov: Mapping[str, Any]) -> str:
    """8 hex digits over everything :func:`provenance_diff` compares (equal hash = no difference)."""
    doc = {k: prov.get(k) for k in COMPARED}
    doc["config"] = _drop(doc["config"] or {}, IGNORED_KEYS)
    return _short_hash(doc)


def config_hash(cfg) -> str:
    """8 hex digits over a config (minus :data:`IGNORED_KEYS`) and the weights it starts from."""
    return _short_hash({"config": _drop(to_dict(cfg), IGNORED_KEYS), "weights": weights_fingerprint(cfg.model)})


def run_provenance(cfg) -> dict[str, Any]:
    """The fingerprint of an experiment config's inputs (opens its datasets; reads no image)."""
    images, train = _image_lists(cfg.data)
    prov = {"version": VERSION, "config_name": cfg.name, "config": to_dict(cfg), "weights": weights_fingerprint(cfg.model),
            "grounding_caches": grounding_caches(cfg, train), "image_lists": images,
            "muva_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    prov["hash"] = provenance_hash(prov)
    return prov


def _shorten(tree: Any) -> Any:
    """Digests cut to 12 hex digits (what is compared and shown)."""
    if isinstance(tree, Mapping):
        return {k: _shorten(v) for k, v in tree.items()}
    if isinstance(tree, str) and _HEX.match(tree):
        return tree[:12]
    return tree


def provenance_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["stage2.epochs: 1 → 2", "weights.sha256: '…' → '…'", ...]``; empty when they match.

    Config keys are named as in the config (``stage2.epochs``), the other sections with their
    prefix (``weights.``, ``grounding_caches.<source>.``, ``image_lists.train.``).
    """
    # a provenance.json of an older muva names renamed keys the old way
    out = config_diff(upgrade_tree(ExperimentConfig, old.get("config") or {}), new.get("config") or {}, ignore=IGNORED_KEYS)
    rest_old = {k: _shorten(old.get(k, "<absent>")) for k in COMPARED[1:]}
    rest_new = {k: _shorten(new.get(k, "<absent>")) for k in COMPARED[1:]}
    return out + config_diff(rest_old, rest_new)


def read_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    """``<run_dir>/provenance.json``, or None when absent or unreadable."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_provenance(run_dir: str | Path, prov: Mapping[str, Any], **extra: Any) -> Path:
    path = Path(run_dir) / PROVENANCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps({**prov, **extra}, indent=1, default=str) + "\n")
