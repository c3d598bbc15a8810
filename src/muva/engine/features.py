"""Feature extraction over a dataset, sharded over DDP ranks and gathered back in order."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from muva.engine.distributed import gather_by_index, is_distributed
from muva.engine.trainer import unwrap
from muva.utils.progress import track

__all__ = ["extract_dataset", "test_features", "pseudo_mask_features"]


def test_features(before_bn: bool = False, use_pseudo_masks: bool = False) -> Callable:
    """Extraction function for retrieval/memory: the model's L2-normalised test feature.

    ``use_pseudo_masks``: the batch's pseudo masks drive the part tokens (stage 2's memory
    rebuild, as the reference) instead of the predicted masks.
    """

    def fn(model: nn.Module, batch: dict) -> torch.Tensor:
        masks = batch.get("mask") if use_pseudo_masks else None
        return model.extract(batch["image"], before_bn=before_bn, pseudo_masks=masks)

    return fn


def pseudo_mask_features(model: nn.Module, batch: dict) -> torch.Tensor:
    """Stage-1 feature: the projected (text-aligned) image feature with pseudo masks driving the parts."""
    out = model(batch["image"], pseudo_masks=batch.get("mask"), camids=batch.get("camid") if model.cfg.sie else None)
    return out["proj_features"] if "proj_features" in out else out["features"]


@torch.no_grad()
def extract_dataset(model: nn.Module, loader, total: int, fn: Callable, device: torch.device, autocast=None,
                    description: str = "extracting", progress: bool = False, with_valid: bool = False):
    """``total × D`` float32 features of every sample (rank shards gathered on every rank).

    ``loader`` yields batches with an ``index`` entry (see :func:`muva.engine.data.eval_loader`).
    ``with_valid``: also return a ``total`` bool tensor, False where the batch's ``valid``
    entry said the image could not be read (its feature row is then meaningless).
    """
    bare = unwrap(model)
    was_training = bare.training
    bare.eval()
    feats, idx = [], []
    ctx = autocast if autocast is not None else contextlib.nullcontext
    it = loader
    if progress:
        it = track(loader, description, total=len(loader))
    try:
        for batch in it:
            batch = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            with ctx():
                f = fn(bare, batch)
            f = f.float()
            if with_valid:  # carried as one more column so that the DDP gather keeps it in order
                ok = batch.get("valid", torch.ones(len(f), dtype=torch.bool, device=f.device))
                f = torch.cat([f, ok.to(f.device, torch.float32)[:, None]], dim=1)
            feats.append(f)
            idx.append(batch["index"])
    finally:
        bare.train(was_training)
    if feats:
        local = torch.cat(feats)
        local_idx = torch.cat(idx)
    else:
        local = torch.zeros((0, 1), device=device)
        local_idx = torch.zeros((0,), dtype=torch.long, device=device)
    if is_distributed():
        dim = torch.tensor([local.shape[1] if len(local) else 0], device=device)
        torch.distributed.all_reduce(dim, op=torch.distributed.ReduceOp.MAX)
        if local.shape[1] != int(dim):
            local = local.new_zeros((0, int(dim)))
        out = gather_by_index(local, local_idx, total).cpu()
    else:
        out = local.new_zeros((total, local.shape[1]))
        out[local_idx.long()] = local
        out = out.cpu()
    if with_valid:
        return out[:, :-1].contiguous(), out[:, -1] > 0.5
    return out
