"""The experiment runner behind ``muva train``: data → stage 1 → stage 2 → evaluation → files.

Run folder (``output.dir``)::

    config.yaml          resolved configuration
    metrics.jsonl        losses, learning rates, evaluation metrics (one JSON per line)
    tb/                  TensorBoard event files
    last.pt              resumable checkpoint (see muva.engine.checkpoint)
    best.pt              only with eval.keep_best=true: the epoch with the best target metric
                         (selected on the target test set — not a domain-generalisation result)
    model.safetensors    final weights (+ .json), loadable with muva.models.load_model
    results.md/.csv/.json/_cmc.csv   evaluation of the final (last-epoch) model on the targets
    per_query.npz        per-query AP, INP and first-match rank of that evaluation (muva sweep report)
    mask_iou.json        synthetic data only: IoU of predicted and pseudo part masks with the true parts
    eval_history.json    every evaluation during training

A folder that already holds a run is refused unless the run is resumed (``resume``) or
replaced (``overwrite``); SIGINT / SIGTERM stop training at the next step boundary after
saving ``last.pt`` (see :mod:`muva.engine.runfolder`).
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muva.config import save_config, to_dict
from muva.data.loader import ReIDImageDataset
from muva.data.transforms import build_transforms
from muva.engine.checkpoint import load_checkpoint, load_weights
from muva.engine.config import ExperimentConfig
from muva.engine.data import build_pseudo_masks, build_sources, build_targets
from muva.engine.distributed import barrier, broadcast_object, cleanup, init_distributed
from muva.engine.evaluate import evaluate_model
from muva.engine.logging import RunLogger
from muva.engine.mask_quality import mask_quality, write_mask_quality
from muva.engine.runfolder import RunFolderError, StopRequest, prepare_run_folder, resume_mismatch
from muva.engine.stage1 import run_stage1
from muva.engine.stage2 import check_stage2_losses, run_stage2
from muva.engine.stage_inputs import EvalPlan, StageInputs
from muva.engine.trainer import TrainingInterrupted, unwrap
from muva.evaluation import results_table, save_per_query
from muva.models import build_model, save_model
from muva.models.clip_loading import ensure_weights_obtainable
from muva.models.compile import check_compile_toolchain
from muva.utils.errors import RunInterrupted

__all__ = ["Experiment", "train", "set_seed"]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Experiment:
    """One training run.  ``Experiment(cfg).run()`` returns ``{target: EvalResult}``.

    Args:
        cfg: the experiment configuration.
        resume: continue from ``<output.dir>/last.pt`` when it exists (the config must fit it).
        overwrite: empty an existing run folder first (without it, and without ``resume``, a
            folder that already holds a run is an error).
        quiet: no live progress (logs and files are still written; per-epoch lines are printed
            instead, as when the output is not a terminal).
        hooks: extra :class:`muva.engine.trainer.Hook` objects added to both stages' trainers.
    """

    def __init__(self, cfg: ExperimentConfig, resume: bool = False, quiet: bool = False, console=None,
                 hooks: list | None = None, overwrite: bool = False):
        self.cfg = cfg
        self.extra_hooks = list(hooks or [])
        self.resume = resume
        self.overwrite = overwrite
        self.stop = StopRequest()
        self.quiet = quiet
        self.console = console
        self.run_dir = Path(cfg.output.dir)
        self.stage1_done = False
        self.stage1_loss: dict[str, float] = {}
        self.stage2_loss: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.stage2_result = None  # StageResult of stage 2 when it ran in this process
        self.final_results: dict = {}

    # ------------------------------------------------------------------ utilities
    def log(self, message: str) -> None:
        if self.dist.is_main:
            self.logger.print(message)

    @property
    def show_progress(self) -> bool:
        terminal = self.console.is_terminal if self.console is not None else sys.stdout.isatty()
        return self.dist.is_main and not self.quiet and self.cfg.output.progress and terminal

    def autocast(self):
        if self.cfg.amp == "none" or self.dist.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if self.cfg.amp == "fp16" else torch.bfloat16)

    def run_state(self, stage1_done: bool) -> dict[str, Any]:
        """Run-level entries stored in every checkpoint (stage 2 adds its best score)."""
        return {"config": to_dict(self.cfg), "num_classes": self.train.num_classes, "num_cams": self.train.num_cams,
                "stage1_done": stage1_done, "history": self.history, "best": None}

    def stage_inputs(self):
        """The read-only inputs both stages get (:class:`muva.engine.stage_inputs.StageInputs`)."""

        return StageInputs(cfg=self.cfg, model=self.model, train=self.train, masks=self.masks, train_ds=self.train_ds,
                           plain_ds=self.plain_ds, dist=self.dist, logger=self.logger, run_dir=self.run_dir,
                           autocast=self.autocast, show_progress=self.show_progress, stop=self.stop,
                           checkpoint_extra=self.run_state, initial_grad=self._initial_grad,
                           hooks=tuple(self.extra_hooks))

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg = self.cfg
        self.dist = init_distributed(cfg.device)
        prepare_run_folder(self.run_dir, self.resume, self.overwrite, delete=self.dist.is_main)
        barrier()
        ensure_weights_obtainable(cfg.model)  # before minutes of image scanning: unobtainable weights fail now
        if cfg.compile:  # a missing compiler fails now too, not at the first stage-2 step
            check_compile_toolchain(self.dist.device)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, tensorboard=cfg.output.tensorboard,
                                console=self.console)
        set_seed(cfg.seed)
        self.train = build_sources(cfg.data, progress=self.show_progress)
        if self.train.bad_images:
            self.log(f"[yellow]skipped {len(self.train.bad_images)} unreadable training image(s)[/], e.g. "
                     f"{next(iter(self.train.bad_images))}")
            if self.dist.is_main:
                (self.run_dir / "bad_images.json").write_text(json.dumps(self.train.bad_images, indent=1))
        mcfg = cfg.model
        if mcfg.sie:
            mcfg = replace(mcfg, num_cameras=self.train.num_cams)
        self.model = build_model(mcfg, self.train.num_classes, device=self.dist.device)
        self._initial_grad = {id(p): p.requires_grad for p in self.model.parameters()}
        self.masks = None
        if self.model.num_parts:
            self.masks = build_pseudo_masks(self.train, cfg.data, cfg.grounding, self.model.parts, self.model.input_size,
                                            self.model.stride, self.model.patch_size)
        train_tf, eval_tf = build_transforms(self.model.input_size, mcfg.mean, mcfg.std, self.model.grid,
                                             cfg.data.transforms, mcfg.test_interpolation)
        self.eval_tf = eval_tf
        labels = self.train.labels
        self.train_ds = ReIDImageDataset(self.train.records, train_tf, labels, self.masks, cfg.data.on_bad_image)
        self.plain_ds = ReIDImageDataset(self.train.records, eval_tf, labels, self.masks, cfg.data.on_bad_image)
        self.targets = build_targets(cfg.data, progress=self.show_progress)
        for name, splits in self.targets:
            bad = {p: r for ds in splits for p, r in ds.info.get("unreadable_images", {}).items()}
            if bad:
                self.log(f"[yellow]target {name}: {len(bad)} unreadable query/gallery image(s) will be left out of "
                         f"every evaluation (listed in results.json)[/], e.g. {next(iter(bad))}")
        srcs = ", ".join(f"{d.name}" for d in self.train.sources)
        self.log(f"[bold]{cfg.name}[/]: sources {srcs} → {self.train.num_classes} identities, "
                 f"{len(self.train.records)} images, {self.train.num_cams} cameras; targets "
                 f"{', '.join(n for n, _ in self.targets) or 'none'}; device {self.dist.device}"
                 f"{f' × {self.dist.world_size} processes' if self.dist.enabled else ''}")

    def load_resume(self) -> dict | None:
        path = self.run_dir / "last.pt"
        if not self.resume:
            return None
        if not path.is_file():
            self.log(f"[yellow]--resume: no checkpoint at {path}; starting from scratch[/]")
            return None
        state = load_checkpoint(path, map_location=self.dist.device)
        diff = resume_mismatch(state.get("config", {}), to_dict(self.cfg))
        if diff:
            listed = "\n  ".join(diff[:12]) + (f"\n  … and {len(diff) - 12} more" if len(diff) > 12 else "")
            raise RunFolderError(f"cannot resume {path}: it was trained with a different config ({len(diff)} key(s) "
                                 f"differ, checkpoint → now):\n  {listed}\nResume with the run's own config "
                                 f"(muva train -c {self.run_dir / 'config.yaml'} --resume) or start afresh with "
                                 "--overwrite or another output.dir")
        if state.get("num_classes") != self.train.num_classes:
            raise RunFolderError(f"cannot resume {path}: it was trained with {state.get('num_classes')} identities, "
                                 f"the data now has {self.train.num_classes}; resume needs the same sources and images")
        self.history = list(state.get("history", []))
        tr = state["trainer"]
        dropped = self.logger.truncate(tr["stage"], int(tr["global_iter"])) if self.dist.is_main else 0
        total = (self.cfg.stage1 if tr["stage"] == "stage1" else self.cfg.stage2).epochs
        where = (f"{tr['stage']} finished" if tr.get("finished") or tr["epoch"] >= total else
                 f"{tr['stage']} epoch {tr['epoch'] + 1}/{total}, iteration {tr['iter_in_epoch']}")
        self.log(f"resuming from {path} ({where}){f'; {dropped} later metric record(s) dropped' if dropped else ''}")
        return state

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, stage: str = "final", epoch: int | None = None, targets=None) -> dict:
        """Evaluate the current model on the targets; returns ``{target: EvalResult}`` on every rank."""

        results = evaluate_model(self.model, targets if targets is not None else self.targets, self.eval_tf,
                                 self.cfg, self.dist, self.autocast, progress=self.show_progress)
        return broadcast_object(results)

    def record_eval(self, trainer, results: dict, is_best: bool) -> None:
        rec = {"stage": "eval", "epoch": trainer.epoch + 1 if trainer is not None else None,
               "step": trainer.global_iter if trainer is not None else 0}
        for name, r in results.items():
            rec[f"eval/{name}/mAP"] = 100.0 * float(r.mAP)
            rec[f"eval/{name}/rank1"] = 100.0 * float(r.rank1)
        self.history.append(rec)
        self._last_results = results
        if self.dist.is_main:
            self.logger.log(rec, step=rec["epoch"] or 0)
            line = "; ".join(f"{n}: {r.summary()}" for n, r in results.items())
            best = " [green](best so far on the target test set)[/]" if is_best and self.cfg.eval.keep_best else ""
            self.log(f"eval epoch {rec['epoch']}: {line}{best}")
            for name, r in results.items():
                skipped = r.info.get("skipped_images", [])
                if skipped:
                    self.log(f"[yellow]{name}: {len(skipped)} unreadable image(s) left out[/] (e.g. "
                             f"{skipped[0]['path']}: {skipped[0]['reason']})")
            (self.run_dir / "eval_history.json").write_text(json.dumps(self.history, indent=1))

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        t0 = time.time()
        check_stage2_losses(self.cfg)  # unknown stage2.weights names fail before any work
        self.setup()
        try:
            state = self.load_resume()
            if self.dist.is_main:  # after the resume check: a refused resume leaves the run's config as it was
                save_config(self.cfg, self.run_dir / "config.yaml")
            stage = state["trainer"]["stage"] if state else None
            self.stage1_done = bool(state and (state.get("stage1_done") or stage == "stage2"))
            if state is not None and (self.stage1_done or stage == "stage2"):
                load_weights(unwrap(self.model), state["trainer"]["model"],  # prompts learned in stage 1
                             f"the checkpoint in {self.run_dir}", f"resume with the run's own config "
                             f"(-c {self.run_dir / 'config.yaml'}) or start afresh with --overwrite")
            inputs = self.stage_inputs()
            with self.stop:
                try:
                    if self.cfg.stage1.enabled and not self.stage1_done:
                        self.stage1_loss = run_stage1(inputs, state if stage == "stage1" else None).losses
                        self.stage1_done = True
                    if self.cfg.stage2.enabled:
                        done = bool(state and stage == "stage2" and state["trainer"].get("finished"))
                        if not done:
                            plan = None
                            if self.targets:
                                plan = EvalPlan(lambda tr: self.evaluate(stage="stage2", epoch=tr.epoch + 1),
                                                self.record_eval)
                            self.stage2_result = run_stage2(inputs, plan, state if stage == "stage2" else None)
                            self.stage2_loss = self.stage2_result.losses
                except TrainingInterrupted as exc:
                    raise RunInterrupted(
                        f"{exc} ({self.stop.signal_name}); the state is saved in {self.run_dir / 'last.pt'}. "
                        f"Resume with: muva train -c {self.run_dir / 'config.yaml'} --resume") from None
            results = self.finish()
        finally:
            self.logger.close()
        self.log(f"done in {time.time() - t0:.0f} s → {self.run_dir}")
        return results

    def finish(self) -> dict:
        """Final evaluation (reused from the last epoch when it just ran), weights and tables."""

        results = {}
        if self.targets:
            last = self.stage2_result is not None and self.stage2_result.finished and self.history
            if last and self.history[-1].get("epoch") == self.cfg.stage2.epochs and self._last_results is not None:
                results = self._last_results
            else:
                results = self.evaluate()
                if self.dist.is_main and not self.history:
                    self.record_eval(None, results, False)
        if self.dist.is_main:
            save_model(self.model, self.run_dir / "model.safetensors")
            if results:
                results_table(results, method=self.cfg.name).write(self.run_dir, "results")
                save_per_query(self.run_dir / "per_query.npz", results)  # per-query AP/INP/rank: intervals over queries
        if self.masks is not None:  # true parts known (synthetic data): how good are the learned masks?
            quality = mask_quality(unwrap(self.model), self.train.records, self.masks, self.targets, self.eval_tf,
                                   self.cfg, self.dist)
            if quality is not None and self.dist.is_main:
                write_mask_quality(self.run_dir, quality)
        self.final_results = results
        return results

    _last_results = None


def train(cfg: ExperimentConfig, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Run one experiment (see :class:`Experiment`); returns ``{target: EvalResult}``."""
    exp = Experiment(cfg, resume=resume, quiet=quiet, overwrite=overwrite)
    try:
        return exp.run()
    finally:
        cleanup()
