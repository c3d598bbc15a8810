"""Evaluate a model on re-ID targets: features (sharded over ranks, gathered) → metrics on rank 0."""

from __future__ import annotations

from typing import Sequence

from muva.data.records import ReIDDataset

__all__ = ["evaluate_model", "target_features"]


def _cap(records: list, n: int) -> list:
    if n <= 0 or len(records) <= n:
        return records
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]


def target_features(model, dataset: ReIDDataset, transform, cfg, dist, autocast, progress: bool = False):
    """``(query_features, gallery_features, query_records, gallery_records)`` of one target."""
    from muva.data.loader import ReIDImageDataset
    from muva.engine.data import eval_loader
    from muva.engine.features import extract_dataset, test_features

    query = list(dataset.query)
    gallery = list(dataset.gallery)
    if cfg.eval.max_images:
        nq = max(1, cfg.eval.max_images * len(query) // max(1, len(query) + len(gallery)))
        query, gallery = _cap(query, nq), _cap(gallery, cfg.eval.max_images - nq)
    records = query + gallery
    ds = ReIDImageDataset(records, transform, labels=[r.pid for r in records], on_error=cfg.data.on_bad_image)
    loader = eval_loader(ds, cfg.data.eval_batch_size, cfg.data.num_workers, dist.world_size, dist.rank,
                         dist.device.type)
    feats = extract_dataset(model, loader, len(records), test_features(cfg.eval.before_bn), dist.device, autocast,
                            f"features {dataset.name}", progress)
    return feats[: len(query)], feats[len(query):], query, gallery


def evaluate_model(model, targets: Sequence[tuple[str, list[ReIDDataset]]], transform, cfg, dist, autocast,
                   progress: bool = False) -> dict:
    """``{target name: EvalResult or MultiSplitResult}`` (on rank 0; other ranks return ``{}``)."""
    from muva.evaluation import evaluate, summarize_splits

    results = {}
    for name, splits in targets:
        if not isinstance(splits, (list, tuple)):
            splits = [splits]
        per_split = []
        for ds in splits:
            qf, gf, q, g = target_features(model, ds, transform, cfg, dist, autocast, progress)
            if not dist.is_main:
                continue
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
    return results


def evaluate_checkpoint(cfg, checkpoint, targets: Sequence[str] | None = None, quiet: bool = False) -> dict:
    """Load weights (``model.safetensors`` or a training checkpoint) and evaluate on ``targets``."""
    from pathlib import Path

    import torch

    from muva.data.transforms import build_transforms
    from muva.engine.checkpoint import load_checkpoint
    from muva.engine.data import build_targets
    from muva.engine.distributed import init_distributed
    from muva.models import build_model, load_model

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    dist = init_distributed(cfg.device)
    if checkpoint.suffix == ".pt":
        state = load_checkpoint(checkpoint)
        weights = state["trainer"]["model"]
        from dataclasses import replace

        mcfg = cfg.model if not cfg.model.sie else replace(cfg.model, num_cameras=int(state.get("num_cams", 0)))
        model = build_model(mcfg, int(state["num_classes"]), load_weights=False)
        model.load_state_dict(weights)
        model = model.to(dist.device)
    else:
        model = load_model(checkpoint, device=dist.device)
    _, eval_tf = build_transforms(model.input_size, model.cfg.mean, model.cfg.std, model.grid,
                                  test_interpolation=model.cfg.test_interpolation)
    tgts = build_targets(cfg.data, targets)
    if not tgts:
        raise ValueError("no target to evaluate: give --target DATASET or set data.targets in the config")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if (cfg.amp != "none" and dist.device.type == "cuda") else None
    return evaluate_model(model, tgts, eval_tf, cfg, dist, autocast, progress=not quiet)
