"""How well a trained model's part masks match the true parts, beside the pseudo masks it learned from.

Synthetic domains (``muva synth``) know where every part is: each domain folder's
``parts.jsonl`` holds the true part boxes of every image.  When every training image has
such a record, ``muva train`` writes ``mask_iou.json`` into the run folder::

    {"parts": ["head", ...], "threshold": 0.5, "min_fraction": 0.5,
     "source":  {"images": N, "predicted": {part: IoU}, "pseudo": {part: IoU}},
     "targets": {name: {"images": N, "predicted": {part: IoU}}}}

* the true boxes become patch masks with the rule the pseudo masks use
  (:func:`muva.grounding.masks.boxes_to_patch_masks`, ``grounding.min_fraction``);
* **predicted**: the last layer's mask probabilities above ``model.mask_threshold`` on the
  untransformed (test-time) image;
* **pseudo**: the masks the model was trained on (training images only: the targets were never grounded);
* IoU per image and part over the patch grid, averaged over the images where the part is
  visible (parts an occluder hides are left out) and its true or compared mask is not empty;
* at most :data:`MAX_IMAGES` images of each set, evenly spread over it (every k-th image).

A target whose images lack ``parts.jsonl`` records is left out; without records for the
training images no file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from muva.data.loader import ReIDImageDataset
from muva.data.synth.parts_file import PARTS_FILE, PartsFileError, PartsRecord, read_parts
from muva.engine.data import eval_loader
from muva.engine.features import extract_dataset
from muva.grounding.masks import boxes_to_patch_masks
from muva.utils.io import atomic_write_text

__all__ = ["MASK_IOU_FILE", "true_part_records", "patch_iou", "predicted_masks", "mask_quality", "write_mask_quality",
           "read_mask_quality"]

MASK_IOU_FILE = "mask_iou.json"
MAX_IMAGES = 256  # per image set: enough for a per-part mean to ±0.02, a few seconds on a CPU


def _spread(records: list, limit: int = MAX_IMAGES) -> list:
    """At most ``limit`` of ``records``, every k-th (deterministic, spread over identities and cameras)."""
    step = max(1, -(-len(records) // limit))
    return records[::step][:limit]


def true_part_records(paths: Sequence[str]) -> dict[str, PartsRecord] | None:
    """``{path: PartsRecord}`` from the ``parts.jsonl`` of each image's domain folder; None unless every image has one."""
    by_domain: dict[Path, dict[str, PartsRecord]] = {}
    out = {}
    for p in paths:
        image = Path(p)
        domain = image.parent.parent
        if domain not in by_domain:
            try:
                by_domain[domain] = read_parts(domain) if (domain / PARTS_FILE).is_file() else {}
            except PartsFileError:
                by_domain[domain] = {}
        rec = by_domain[domain].get(f"{image.parent.name}/{image.name}")
        if rec is None:
            return None
        out[p] = rec
    return out


def patch_iou(a: np.ndarray, b: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Mean IoU per part of bool masks ``a``, ``b`` (N×R×L) over the images where the part is
    ``visible`` (N×R) and ``a`` or ``b`` is not empty; nan for a part without such an image."""
    inter = (a & b).sum(-1).astype(np.float64)
    union = (a | b).sum(-1).astype(np.float64)
    keep = visible & (union > 0)
    iou = np.where(keep, inter / np.maximum(union, 1), 0.0)
    counts = keep.sum(0)
    return np.where(counts > 0, iou.sum(0) / np.maximum(counts, 1), np.nan)


def predicted_masks(model, records, eval_tf, cfg, dist) -> tuple[np.ndarray, np.ndarray]:
    """The model's predicted masks (N×R×L bool, last layer above ``model.mask_threshold``) of ``records``
    and which images could be read (N bool)."""
    ds = ReIDImageDataset(records, eval_tf, on_error="skip", substitute=False)
    loader = eval_loader(ds, cfg.data.eval_batch_size, cfg.data.num_workers, dist.world_size, dist.rank, dist.device.type)
    threshold = float(model.cfg.mask_threshold)

    def fn(m, batch):
        _, layers = m.extract(batch["image"], return_masks=True)
        return (layers[-1] > threshold).flatten(1).float()

    flat, valid = extract_dataset(model, loader, len(ds), fn, dist.device, with_valid=True)
    return flat.numpy().reshape(len(ds), model.num_parts, model.num_patches) > 0.5, valid.numpy().astype(bool)


def _truth(recs: Mapping[str, PartsRecord], paths: Sequence[str], parts: Sequence[str], input_size, stride: int,
           patch: int, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    masks, visible = [], []
    for p in paths:
        rec = recs[p]
        boxes = {k: v for k, v in rec.boxes.items() if k in parts}
        masks.append(boxes_to_patch_masks(boxes, (rec.width, rec.height), tuple(input_size), stride, parts,
                                          min_fraction, patch))
        visible.append([k in rec.boxes and k not in rec.occluded for k in parts])
    return np.stack(masks), np.asarray(visible, dtype=bool)


def _per_part(parts: Sequence[str], values: np.ndarray) -> dict[str, float | None]:
    return {p: (None if np.isnan(v) else round(float(v), 6)) for p, v in zip(parts, values)}


def mask_quality(model, train_records, pseudo: Mapping[str, np.ndarray], targets, eval_tf, cfg, dist) -> dict | None:
    """The ``mask_iou.json`` document (see the module doc), or None without true parts for the training images."""
    if not getattr(model, "num_parts", 0):
        return None
    train_records = _spread(list(train_records))
    paths = [r.path for r in train_records]
    recs = true_part_records(paths)
    if recs is None:
        return None
    parts = list(model.parts)
    geometry = (model.input_size, model.stride, model.patch_size, cfg.grounding.min_fraction)
    truth, visible = _truth(recs, paths, parts, *geometry)
    pred, readable = predicted_masks(model, train_records, eval_tf, cfg, dist)
    visible &= readable[:, None]
    pseudo_arr = np.stack([np.asarray(pseudo[p], dtype=bool) for p in paths])
    doc = {"parts": parts, "threshold": float(model.cfg.mask_threshold), "min_fraction": float(cfg.grounding.min_fraction),
           "source": {"images": int(readable.sum()), "predicted": _per_part(parts, patch_iou(pred, truth, visible)),
                      "pseudo": _per_part(parts, patch_iou(pseudo_arr, truth, visible))},
           "targets": {}}
    for name, splits in targets:
        records = _spread(list({r.path: r for ds in splits for r in (*ds.query, *ds.gallery)}.values()))
        trecs = true_part_records([r.path for r in records])
        if trecs is None:
            continue
        tpaths = [r.path for r in records]
        t_truth, t_visible = _truth(trecs, tpaths, parts, *geometry)
        t_pred, t_readable = predicted_masks(model, records, eval_tf, cfg, dist)
        t_visible &= t_readable[:, None]
        doc["targets"][name] = {"images": int(t_readable.sum()), "predicted": _per_part(parts, patch_iou(t_pred, t_truth, t_visible))}
    return doc


def write_mask_quality(run_dir: str | Path, doc: dict) -> Path:
    return atomic_write_text(Path(run_dir) / MASK_IOU_FILE, json.dumps(doc, indent=1))


def read_mask_quality(run_dir: str | Path) -> dict | None:
    """A run's ``mask_iou.json`` (None when it has none or it does not parse)."""
    path = Path(run_dir) / MASK_IOU_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


