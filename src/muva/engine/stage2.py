"""Stage 2 — image-encoder training with the text side frozen.

The objective is ``Σ stage2.weights[name] · term(name)`` over the registered loss terms of
:data:`muva.losses.LOSSES` whose weight is not 0 (MUVA: id, imp, i2t, mask 1; CLIP-ReID: id
0.25, triplet 1, i2t 1, imp 0, mask 0).  The built-in terms:

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

A plugin adds a term with :func:`muva.losses.register_loss` (see :mod:`muva.losses.terms`);
:func:`check_stage2_losses` refuses unknown names before training starts.
The model is wrapped in DistributedDataParallel under torchrun (SyncBatchNorm on GPU); with
``compile: true`` the training forward runs through :func:`muva.models.compile.compile_model`.
"""

from __future__ import annotations

import torch

from muva.data.samplers import RandomIdentitySampler
from muva.engine.data import eval_loader, train_loader
from muva.engine.features import extract_dataset, test_features
from muva.engine.hooks import CallbackHook, CheckpointHook, EvalHook
from muva.engine.logging import LoggingHook
from muva.engine.optim import build_optimizer
from muva.engine.schedulers import scheduler_from_config
from muva.engine.stage_inputs import EvalPlan, StageInputs, StageResult, set_trainable
from muva.engine.trainer import Trainer
from muva.losses import LOSSES, LossContext, resolve_weights
from muva.models.compile import compile_model

__all__ = ["run_stage2", "Stage2Losses", "check_stage2_losses"]


def check_stage2_losses(cfg, *, has_parts: bool | None = None, has_pseudo_masks: bool | None = None) -> dict[str, float]:
    """``{loss name: weight}`` of the stage-2 terms that will run for the experiment ``cfg``.

    Raises :class:`muva.losses.LossConfigError` (a config error: one ``error:`` line) when
    ``stage2.weights`` names a loss that is not registered — the message lists the registered
    ones and says to load a plugin with ``muva --import MODULE`` — or when no term would run.
    ``has_parts`` defaults to whether ``model.parts`` is non-empty.  ``{}`` when stage 2 is off.
    """

    if not cfg.stage2.enabled:
        return {}
    if has_parts is None:
        has_parts = bool(cfg.model.parts)
    return resolve_weights(cfg.stage2.weights, has_parts, has_pseudo_masks)


class Stage2Losses(torch.nn.Module):
    """The weighted stage-2 objective: one built term per weighted loss (state saved in checkpoints).

    ``forward(out, batch)`` returns ``{name: weight · term}`` (logged as ``loss/<name>``).
    The terms are in :attr:`terms` (a ``ModuleDict``); a checkpoint written when the cluster
    memory was the attribute ``memory`` (keys ``memory.<buffer>``) still loads.
    """

    def __init__(self, cfg, num_classes: int, feature_dim: int, text_prototypes: torch.Tensor | None, has_parts: bool,
                 mask_temperature: float = 1.0):
        super().__init__()

        self.weights = resolve_weights(cfg.weights, has_parts)
        ctx = LossContext(cfg, int(num_classes), int(feature_dim), text_prototypes, float(mask_temperature), bool(has_parts))
        self.terms = torch.nn.ModuleDict({name: LOSSES.get(name).build(ctx) for name in self.weights})
        self.has_parts = has_parts
        self.register_load_state_dict_pre_hook(_upgrade_memory_keys)

    def epoch_terms(self) -> list:
        """The terms to :meth:`~muva.losses.LossTerm.rebuild` at the start of every epoch."""
        return [t for t in self.terms.values() if t.needs_epoch_features]

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {name: self.weights[name] * term(out, batch) for name, term in self.terms.items()}


def _upgrade_memory_keys(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """``memory.<buffer>`` (the layout before loss terms) → ``terms.imp.memory.<buffer>``; dropped without ``imp``."""
    old = prefix + "memory."
    for key in [k for k in state_dict if k.startswith(old)]:
        value = state_dict.pop(key)
        if "imp" in module.terms:
            state_dict[f"{prefix}terms.imp.memory.{key[len(old):]}"] = value


def run_stage2(inp: StageInputs, evaluation: EvalPlan | None = None, resume_state: dict | None = None) -> StageResult:
    """Run (or resume) stage 2 on ``inp``; ``evaluation`` (when there are targets) runs every
    ``eval.every`` epochs and after the last.  Returns the last losses and the best score."""

    cfg, s2, model, dist = inp.cfg, inp.cfg.stage2, inp.model, inp.dist
    has_parts = model.num_parts > 0
    weights = check_stage2_losses(cfg, has_parts=has_parts, has_pseudo_masks=inp.masks is not None)
    labels = inp.train.labels
    n = len(labels)
    terms = ", ".join(f"{name} {w:g}" for name, w in weights.items())
    inp.log(f"[bold]stage 2[/] image encoder: {inp.train.num_classes} identities, {n} images, {s2.epochs} epochs; "
            f"losses {terms}")
    text = None
    if any(LOSSES.get(name).needs_text for name in weights):
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
    # compile: the training forward runs compiled; the model object (checkpoints, eval) is unchanged
    forward = compile_model(train_model, cfg.compile_mode, dist.device) if cfg.compile else train_model

    def step(trainer, batch):
        out = forward(batch["image"], camids=batch["camid"] if sie else None)
        return losses(out, batch)

    labels_t = torch.as_tensor(labels, dtype=torch.long)

    epoch_terms = losses.epoch_terms()

    def rebuild_memory(trainer):  # the cluster memory (and any term with needs_epoch_features)
        if not epoch_terms or trainer.resumed_mid_epoch:
            return
        plain = eval_loader(inp.plain_ds, cfg.data.eval_batch_size, cfg.data.num_workers, dist.world_size, dist.rank,
                            dist.device.type)
        fn = test_features(use_pseudo_masks=s2.memory_masks == "pseudo" and inp.masks is not None)
        feats = extract_dataset(model, plain, n, fn, dist.device, inp.autocast,
                                f"memory (epoch {trainer.epoch + 1})", inp.show_progress and n > 2000)
        for term in epoch_terms:
            term.rebuild(feats.to(dist.device), labels_t.to(dist.device))

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
