"""Stage 1 — prompt learning with the image encoder frozen.

1. Extract every training image's feature once with the frozen image encoder, the part
   tokens driven by the *pseudo* masks (``stage1.use_pseudo_masks``).
2. Average per identity and L2-normalise → the visual prototype memory (centroids); as
   the reference, the raw features are averaged (``stage1.normalize_before_mean=true``
   averages L2-normalised features instead).  With pseudo masks the twelve mask
   predictors are not run (their output would be thrown away).
3. Train only the per-identity context tokens: MUVA's loss is the CE of the normalised
   text feature of identity y against all centroids / T (``stage1.loss=prompt``);
   CLIP-ReID's is the supervised i2t + t2i contrastive loss between the stored image
   features of the batch and their identities' text features (``stage1.loss=supcon``).

Batches are P×K over the stored features; each distinct identity's text is encoded once
per batch.  Under DDP the prompt gradients are all-reduced (mean) before each step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from muva.data.samplers import RandomIdentitySampler
from muva.engine.data import eval_loader
from muva.engine.distributed import is_distributed
from muva.engine.features import extract_dataset, pseudo_mask_features
from muva.engine.hooks import CheckpointHook
from muva.engine.logging import LoggingHook
from muva.engine.optim import build_optimizer
from muva.engine.schedulers import scheduler_from_config
from muva.engine.stage_inputs import StageInputs, StageResult, set_trainable
from muva.engine.trainer import Trainer
from muva.losses import PromptCentroidLoss, SupConLoss

__all__ = ["run_stage1", "identity_centroids"]


class _IndexDataset(Dataset):
    def __init__(self, labels: torch.Tensor):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        i = item[0] if isinstance(item, tuple) else item
        return {"index": int(i), "pid": int(self.labels[i])}


def identity_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       normalize_first: bool = False) -> torch.Tensor:
    """L2-normalised mean of each identity's features (num_classes × D).

    ``normalize_first``: average the L2-normalised features instead of the raw ones (the
    reference averages the raw features).
    """
    f = F.normalize(features.float(), dim=1) if normalize_first else features.float()
    labels = labels.long().to(f.device)
    sums = f.new_zeros(num_classes, f.shape[1]).index_add_(0, labels, f)
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        raise ValueError(f"{int((counts == 0).sum())} identities have no training image")
    return F.normalize(sums, dim=1)


def _sync_grads(trainer) -> None:
    if not is_distributed():
        return
    world = torch.distributed.get_world_size()
    for g in trainer.optimizer.param_groups:
        for p in g["params"]:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(world)


def run_stage1(inp: StageInputs, resume_state: dict | None = None) -> StageResult:
    """Run (or resume) stage 1 on ``inp``; returns its last losses."""
    cfg, s1, model, dist = inp.cfg, inp.cfg.stage1, inp.model, inp.dist
    labels = torch.as_tensor(inp.train.labels, dtype=torch.long)
    n = len(labels)
    inp.log(f"[bold]stage 1[/] prompt learning: {inp.train.num_classes} identities, {n} images, {s1.epochs} epochs")
    loader = eval_loader(inp.plain_ds, cfg.data.eval_batch_size, cfg.data.num_workers, dist.world_size, dist.rank,
                         dist.device.type)
    fn = pseudo_mask_features if (s1.use_pseudo_masks and inp.masks is not None) else _proj_features
    feats = extract_dataset(model, loader, n, fn, dist.device, inp.autocast, "stage 1 features", inp.show_progress)
    centroids = identity_centroids(feats, labels, inp.train.num_classes, s1.normalize_before_mean).to(dist.device)
    feats_dev = feats.to(dist.device)

    set_trainable(model, "stage1", inp.initial_grad)
    optimizer = build_optimizer(model.named_parameters(), s1.optim)
    scheduler = scheduler_from_config(optimizer, s1.schedule, s1.epochs)
    sampler = RandomIdentitySampler(labels.tolist(), s1.batch_size, s1.num_instances, cfg.seed + 1,
                                    dist.world_size, dist.rank)
    batches = DataLoader(_IndexDataset(labels), batch_size=sampler.local_batch_size, sampler=sampler, drop_last=True)
    prompt_loss = PromptCentroidLoss(s1.temperature)
    supcon = SupConLoss(s1.temperature)

    def step(trainer, batch):
        pids = batch["pid"]
        uniq, inv = torch.unique(pids, return_inverse=True)
        text = model.encode_text(uniq)[inv]
        if s1.loss == "prompt":
            return {"prompt": prompt_loss(text, centroids, pids)}
        return {"supcon": supcon(feats_dev[batch["index"]], text, pids)}

    ckpt = CheckpointHook(inp.run_dir, lambda: inp.checkpoint_extra(False), cfg.output.checkpoint_every, dist.is_main)
    trainer = Trainer(model, optimizer, step, batches, sampler, s1.epochs, scheduler=scheduler, amp=cfg.amp,
                      grad_clip=s1.optim.grad_clip, device=dist.device, name="stage1", is_main=dist.is_main,
                      world_size=dist.world_size, max_iters_per_epoch=cfg.max_iters_per_epoch, stop=inp.stop,
                      grad_hook=_sync_grads,
                      hooks=[LoggingHook(inp.logger, cfg.output.log_every, inp.show_progress), ckpt, *inp.hooks])
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        inp.log(f"resumed stage 1 at epoch {min(trainer.epoch + 1, s1.epochs)}/{s1.epochs}, "
                f"iteration {trainer.iter_in_epoch}")
    trainer.train()
    ckpt.extra = lambda: inp.checkpoint_extra(True)  # stage 1 done: a resume goes on with stage 2
    ckpt.save(trainer)
    return StageResult(losses=dict(trainer.last_losses), finished=True)


def _proj_features(model, batch):
    out = model(batch["image"], camids=batch.get("camid") if model.cfg.sie else None)
    return out["proj_features"] if "proj_features" in out else out["features"]


