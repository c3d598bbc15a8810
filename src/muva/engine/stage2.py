"""Stage 2 — image-encoder training with the text side frozen.

Per batch (weights from ``stage2.weights``; MUVA: all 1, CLIP-ReID: id 0.25, triplet 1,
i2t 1, imp 0, mask 0):

* ``id``      label-smoothed CE of the classifier logits;
* ``imp``     cluster-memory contrastive loss on the BN-neck features (memory rebuilt from
              all training images at the start of every epoch — eval mode, test resize,
              part tokens driven by the pseudo masks as the reference, or by the predicted
              ones with ``stage2.memory_masks=predicted`` — momentum/hard update per batch);
* ``i2t``     label-smoothed CE of the projected image feature against the frozen text
              prototypes of all identities (computed once at the start of the stage);
* ``mask``    BCE + Dice of every layer's mask logits against the (flipped-with-the-image)
              pseudo masks (see :mod:`muva.losses.mask`; τ = ``model.mask_temperature``);
* ``triplet`` batch-hard triplet of the pre-BN features (CLIP-ReID).

The model is wrapped in DistributedDataParallel under torchrun (SyncBatchNorm on GPU).
"""

from __future__ import annotations

import torch

from muva.engine.schedulers import scheduler_from_config
from muva.engine.stage_inputs import EvalPlan, StageInputs, StageResult, set_trainable

__all__ = ["run_stage2", "Stage2Losses"]


class Stage2Losses(torch.nn.Module):
    """The weighted stage-2 objective; holds the cluster memory (saved in checkpoints)."""

    def __init__(self, cfg, num_classes: int, feature_dim: int, text_prototypes: torch.Tensor | None, has_parts: bool,
                 mask_temperature: float = 1.0):
        super().__init__()
        from muva.losses import ClusterMemory, LabelSmoothingCE, MaskLoss, TripletLoss

        self.w = cfg.weights
        self.ce = LabelSmoothingCE(cfg.label_smoothing)
        self.memory = ClusterMemory(feature_dim, num_classes, cfg.memory_temperature, cfg.memory_momentum, cfg.memory_mode)
        self.mask = MaskLoss(cfg.mask_bce_weight, cfg.mask_dice_weight, mask_temperature, cfg.mask_dice_smooth)
        self.triplet = TripletLoss(cfg.triplet_margin)
        self.has_parts = has_parts
        self.register_buffer("text", text_prototypes if text_prototypes is not None else torch.zeros(0), persistent=False)

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        from muva.losses import image_to_text_ce

        y = batch["pid"]
        terms: dict[str, torch.Tensor] = {}
        if self.w.id:
            terms["id"] = self.w.id * self.ce(out["logits"], y)
        if self.w.imp:
            terms["imp"] = self.w.imp * self.memory(out["bn_features"], y)
        if self.w.i2t:
            terms["i2t"] = self.w.i2t * image_to_text_ce(out["proj_features"], self.text, y, self.ce.epsilon)
        if self.w.mask and self.has_parts:
            terms["mask"] = self.w.mask * self.mask(out["mask_logits"], batch["mask"])
        if self.w.triplet:
            terms["triplet"] = self.w.triplet * self.triplet(out["features"], y)
        if not terms:
            raise ValueError("every stage-2 loss weight is 0; set at least one of stage2.weights.*")
        return terms


def run_stage2(inp: StageInputs, evaluation: EvalPlan | None = None, resume_state: dict | None = None) -> StageResult:
    """Run (or resume) stage 2 on ``inp``; ``evaluation`` (when there are targets) runs every
    ``eval.every`` epochs and after the last.  Returns the last losses and the best score."""
    from muva.data.samplers import RandomIdentitySampler
    from muva.engine.data import eval_loader, train_loader
    from muva.engine.features import extract_dataset, test_features
    from muva.engine.hooks import CallbackHook, CheckpointHook, EvalHook
    from muva.engine.logging import LoggingHook
    from muva.engine.optim import build_optimizer
    from muva.engine.trainer import Trainer

    cfg, s2, model, dist = inp.cfg, inp.cfg.stage2, inp.model, inp.dist
    labels = inp.train.labels
    n = len(labels)
    inp.log(f"[bold]stage 2[/] image encoder: {inp.train.num_classes} identities, {n} images, {s2.epochs} epochs")
    has_parts = model.num_parts > 0
    if s2.weights.mask and has_parts and inp.masks is None:
        raise ValueError("stage2.weights.mask > 0 needs pseudo masks (grounding caches) for the sources")
    text = None
    if s2.weights.i2t:
        model.eval()
        text = model.text_features(progress=False).detach().float()
    set_trainable(model, "stage2", inp.initial_grad)
    losses = Stage2Losses(s2, inp.train.num_classes, model.feature_dim, text, has_parts,
                          model.cfg.mask_temperature).to(dist.device)

    train_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if dist.device.type == "cuda":
            train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = DDP(train_model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    optimizer = build_optimizer(model.named_parameters(), s2.optim)
    scheduler = scheduler_from_config(optimizer, s2.schedule, s2.epochs)
    sampler = RandomIdentitySampler(labels, cfg.data.batch_size, cfg.data.num_instances, cfg.seed,
                                    dist.world_size, dist.rank)
    loader = train_loader(inp.train_ds, sampler, sampler.local_batch_size, cfg.data.num_workers, dist.device.type)
    sie = bool(model.cfg.sie)

    def step(trainer, batch):
        out = train_model(batch["image"], camids=batch["camid"] if sie else None)
        return losses(out, batch)

    labels_t = torch.as_tensor(labels, dtype=torch.long)

    def rebuild_memory(trainer):
        if not s2.weights.imp or trainer.resumed_mid_epoch:
            return
        plain = eval_loader(inp.plain_ds, cfg.data.eval_batch_size, cfg.data.num_workers, dist.world_size, dist.rank,
                            dist.device.type)
        fn = test_features(use_pseudo_masks=s2.memory_masks == "pseudo" and inp.masks is not None)
        feats = extract_dataset(model, plain, n, fn, dist.device, inp.autocast,
                                f"memory (epoch {trainer.epoch + 1})", inp.show_progress and n > 2000)
        losses.memory.rebuild(feats.to(dist.device), labels_t.to(dist.device))

    eval_hook = None

    def checkpoint_extra():
        return {**inp.checkpoint_extra(True), "best": eval_hook.best if eval_hook is not None else None}

    ckpt = CheckpointHook(inp.run_dir, checkpoint_extra, cfg.output.checkpoint_every, dist.is_main)
    hooks = [CallbackHook(before_epoch=rebuild_memory), LoggingHook(inp.logger, cfg.output.log_every, inp.show_progress)]
    if evaluation is not None:
        best = resume_state.get("best") if resume_state else evaluation.best
        eval_hook = EvalHook(evaluation.evaluate, cfg.eval.every, evaluation.on_result, ckpt, cfg.eval.best_metric,
                             inp.run_dir / "best.pt" if cfg.eval.keep_best else None, best)
        hooks.append(eval_hook)
    hooks.append(ckpt)
    hooks.extend(inp.hooks)
    trainer = Trainer(train_model, optimizer, step, loader, sampler, s2.epochs, scheduler=scheduler, amp=cfg.amp,
                      grad_clip=s2.optim.grad_clip, device=dist.device, name="stage2", is_main=dist.is_main,
                      world_size=dist.world_size, max_iters_per_epoch=cfg.max_iters_per_epoch, stop=inp.stop,
                      extra_state={"losses": losses}, hooks=hooks)
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        inp.log(f"resumed stage 2 at epoch {min(trainer.epoch + 1, s2.epochs)}/{s2.epochs}, "
                f"iteration {trainer.iter_in_epoch}")
    trainer.train()
    return StageResult(losses=dict(trainer.last_losses), finished=trainer.finished,
                       best=eval_hook.best if eval_hook is not None else None)
