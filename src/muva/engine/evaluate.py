"""Evaluate a model on re-ID targets: features (sharded over ranks, gathered) → metrics on rank 0."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from muva.config import config_diff, from_dict, to_dict
from muva.data.loader import ReIDImageDataset
from muva.data.records import DatasetError, ReIDDataset
from muva.data.transforms import build_transforms
from muva.engine.checkpoint import load_checkpoint, load_weights
from muva.engine.config import load_experiment
from muva.engine.data import build_targets, eval_loader
from muva.engine.distributed import init_distributed
from muva.engine.features import extract_dataset, test_features
from muva.evaluation import evaluate, summarize_splits
from muva.models import ModelConfig, build_model, load_model
from muva.models.io import ModelFileError

__all__ = ["evaluate_model", "target_features"]


def _cap(records: list, n: int) -> list:
    if n <= 0 or len(records) <= n:
        return records
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]


def target_features(model, dataset: ReIDDataset, transform, cfg, dist, autocast, progress: bool = False):
    """``(query_features, gallery_features, query_records, gallery_records, skipped)`` of one target.

    Unreadable images are never replaced: those found by the up-front scan
    (``dataset.info["unreadable_images"]``, see :func:`muva.engine.data.build_targets`) and
    those that fail to decode during extraction are left out of both the features and the
    records, and listed in ``skipped`` (``[{"path", "split", "reason"}]``).  With
    ``data.on_bad_image=raise`` the first one stops the evaluation instead.
    """
    query = list(dataset.query)
    gallery = list(dataset.gallery)
    if cfg.eval.max_images:
        nq = max(1, cfg.eval.max_images * len(query) // max(1, len(query) + len(gallery)))
        query, gallery = _cap(query, nq), _cap(gallery, cfg.eval.max_images - nq)
    known_bad = dict(dataset.info.get("unreadable_images", {}))
    skipped = [{"path": r.path, "split": split, "reason": known_bad[r.path]}
               for split, recs in (("query", query), ("gallery", gallery)) for r in recs if r.path in known_bad]
    query = [r for r in query if r.path not in known_bad]
    gallery = [r for r in gallery if r.path not in known_bad]
    records = query + gallery
    ds = ReIDImageDataset(records, transform, labels=[r.pid for r in records], on_error=cfg.data.on_bad_image,
                          substitute=False)
    loader = eval_loader(ds, cfg.data.eval_batch_size, cfg.data.num_workers, dist.world_size, dist.rank,
                         dist.device.type)
    feats, valid = extract_dataset(model, loader, len(records), test_features(cfg.eval.before_bn), dist.device,
                                   autocast, f"features {dataset.name}", progress, with_valid=True)
    valid = valid.numpy()
    for i in np.flatnonzero(~valid):
        r = records[i]
        skipped.append({"path": r.path, "split": "query" if i < len(query) else "gallery",
                        "reason": ds.bad_files.get(r.path, "cannot be decoded")})
    nq = len(query)
    keep_q, keep_g = valid[:nq], valid[nq:]
    q = [r for r, k in zip(query, keep_q) if k]
    g = [r for r, k in zip(gallery, keep_g) if k]
    return feats[:nq][torch.from_numpy(keep_q)], feats[nq:][torch.from_numpy(keep_g)], q, g, skipped


def evaluate_model(model, targets: Sequence[tuple[str, list[ReIDDataset]]], transform, cfg, dist, autocast,
                   progress: bool = False) -> dict:
    """``{target name: EvalResult or MultiSplitResult}`` (on rank 0; other ranks return ``{}``)."""
    results = {}
    for name, splits in targets:
        if not isinstance(splits, (list, tuple)):
            splits = [splits]
        per_split, skipped = [], []
        for ds in splits:
            qf, gf, q, g, bad = target_features(model, ds, transform, cfg, dist, autocast, progress)
            if not dist.is_main:
                continue
            skipped += [b for b in bad if b not in skipped]
            cams_known = any(r.camid >= 0 for r in q) and any(r.camid >= 0 for r in g)
            per_split.append(evaluate(
                qf, gf, q_pids=[r.pid for r in q], g_pids=[r.pid for r in g],
                q_camids=[r.camid for r in q] if cams_known else None,
                g_camids=[r.camid for r in g] if cams_known else None,
                q_images=[r.path for r in q], g_images=[r.path for r in g], metric=cfg.eval.metric, ap=cfg.eval.ap,
                max_rank=min(50, len(g)), rerank=cfg.eval.rerank or None,
                device=dist.device if dist.device.type == "cuda" else "cpu"))
        if dist.is_main:
            results[name] = per_split[0] if len(per_split) == 1 else summarize_splits(per_split)
            if skipped:
                results[name].info["skipped_images"] = skipped
    return results


def resolve_eval_config(model_path, config=None, overrides=()):
    """``(ExperimentConfig, where it came from)`` for evaluating ``model_path``.

    ``config`` when given; else the run's ``config.yaml`` beside the model file (what
    ``muva train`` writes); else muva's defaults (then give the targets with ``--target``).
    """
    if config is not None:
        return load_experiment(config, overrides), str(config)
    beside = Path(model_path).parent / "config.yaml"
    if beside.is_file():
        return load_experiment(beside, overrides), f"{beside} (the run's config)"
    return load_experiment(None, overrides), "muva defaults (no config.yaml beside the model; give -c to choose)"


def _model_from_file(path, cfg, device):
    """``(model, model config dict it was built from)``: the model file's own config always wins."""
    if path.suffix == ".pt":
        state = load_checkpoint(path)
        saved = state.get("config", {}).get("model")
        mcfg = from_dict(ModelConfig, saved) if saved else cfg.model
        if mcfg.sie:
            mcfg = replace(mcfg, num_cameras=int(state.get("num_cams", 0)))
        model = build_model(mcfg, int(state["num_classes"]), load_weights=False)
        load_weights(model, state["trainer"]["model"], f"{path}", "its weights and the model config stored with "
                     "them disagree: the file is damaged or was edited")
        model.selected_on = state.get("selected_on")  # best.pt: chosen by the target's test metrics
        return model.to(device), to_dict(mcfg)
    model = load_model(path, device=device)
    return model, to_dict(model.cfg)


def evaluate_checkpoint(cfg, checkpoint, targets: Sequence[str] | None = None, quiet: bool = False):
    """Load a model file (``model.safetensors`` or a training checkpoint) and evaluate it on ``targets``.

    The model is built from the file's own config; ``cfg`` gives the evaluation settings and
    data.  Returns ``({target: result}, notes)`` — notes say where ``cfg.model`` disagreed with
    the file (the file wins).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelFileError(f"model file not found: {checkpoint}")
    dist = init_distributed(cfg.device)
    model, file_cfg = _model_from_file(checkpoint, cfg, dist.device)
    notes = []
    if getattr(model, "selected_on", None):
        notes.append(f"{checkpoint.name} was selected on {model.selected_on} (epoch with the best "
                     "target metric): its numbers are not a domain-generalisation result")
    diff = config_diff(to_dict(cfg.model), file_cfg, ignore=("pretrained", "num_cameras"))
    if diff:
        notes.append(f"the config's model section differs from the model file's in {len(diff)} key(s) "
                     f"({'; '.join(diff[:3])}{' …' if len(diff) > 3 else ''}); the model file's are used")
    _, eval_tf = build_transforms(model.input_size, model.cfg.mean, model.cfg.std, model.grid,
                                  test_interpolation=model.cfg.test_interpolation)
    tgts = build_targets(cfg.data, targets, progress=not quiet)
    if not tgts:
        raise DatasetError("no target to evaluate: give --target DATASET or set data.targets in the config")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if (cfg.amp != "none" and dist.device.type == "cuda") else None
    return evaluate_model(model, tgts, eval_tf, cfg, dist, autocast, progress=not quiet), notes
