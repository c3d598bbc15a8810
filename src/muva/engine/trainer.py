"""A small hook-based training loop shared by stage 1, stage 2 and the baseline.

The :class:`Trainer` owns the mechanics (data order, mixed precision, gradient clipping,
optimiser and LR-schedule steps, counters, resumable state); what a step computes is a
``step_fn(batch) -> {loss name: weighted scalar}`` supplied by the stage, and everything
around the loop (logging, checkpoints, evaluation, cluster-memory rebuild) is a
:class:`Hook`.  Hooks run in the order given, on every rank; rank-aware hooks check
``trainer.is_main``.

Resumable state (:meth:`Trainer.state_dict`) = model, optimiser, scheduler, scaler,
sampler position, registered extra modules (e.g. loss buffers), RNG states, counters.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from muva.engine.checkpoint import rng_state, set_rng_state
from muva.utils.errors import MuvaError, RunInterrupted

__all__ = ["Hook", "Trainer", "TrainingDiverged", "TrainingInterrupted", "unwrap"]


class TrainingDiverged(MuvaError, RuntimeError):
    """A loss became NaN/inf."""

    exit_code = 1


class TrainingInterrupted(RunInterrupted):
    """The loop stopped at a step boundary because a stop was requested (its hooks saved the state)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model


class Hook:
    """Base class: override any of the callbacks; ``priority`` is informational."""

    def before_train(self, trainer: "Trainer") -> None: ...

    def before_epoch(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer", losses: Mapping[str, float]) -> None: ...

    def after_epoch(self, trainer: "Trainer") -> None: ...

    def after_train(self, trainer: "Trainer") -> None: ...

    def on_interrupt(self, trainer: "Trainer") -> None:
        """A stop was requested (Ctrl-C / SIGTERM); called at a step boundary before the loop stops."""


class Trainer:
    """Runs ``max_epochs`` epochs of ``step_fn`` over ``loader``.

    Args:
        model: the module being trained (possibly DDP-wrapped).
        optimizer: a torch optimiser over the trainable parameters.
        step_fn: ``step_fn(trainer, batch) -> dict[str, Tensor]`` of *weighted* loss terms;
            their sum is back-propagated.
        loader: an iterable of batches whose sampler has ``set_epoch(epoch, start_batch)``
            and ``batches_per_epoch()`` (``muva.data.samplers.RandomIdentitySampler``).
        scheduler: a :class:`muva.engine.schedulers.LRScheduler` (optional).
        amp: ``"none"``, ``"fp16"`` or ``"bf16"`` (CUDA only; ignored with a note on CPU).
        grad_clip: max gradient norm (0 = off).
        grad_hook: ``fn(trainer)`` called after backward, before clipping and the step.
        extra_state: ``{name: object with state_dict/load_state_dict}`` saved in checkpoints.
        name: stage name stored in checkpoints and logs.
        stop: ``stop() -> bool``, checked before every step (e.g. a
            :class:`muva.engine.runfolder.StopRequest`); when it turns true (on any rank) the
            ``on_interrupt`` hooks run and :class:`TrainingInterrupted` is raised.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step_fn: Callable, loader: Iterable,
                 sampler, max_epochs: int, *, scheduler=None, amp: str = "none", grad_clip: float = 0.0,
                 device: torch.device | str = "cpu", hooks: Iterable[Hook] = (), extra_state: Mapping[str, Any] | None = None,
                 name: str = "train", is_main: bool = True, world_size: int = 1, max_iters_per_epoch: int = 0,
                 grad_hook: Callable | None = None, stop: Callable[[], bool] | None = None):
        self.model = model
        self.optimizer = optimizer
        self.step_fn = step_fn
        self.loader = loader
        self.sampler = sampler
        self.max_epochs = int(max_epochs)
        self.scheduler = scheduler
        self.device = torch.device(device)
        self.grad_clip = float(grad_clip)
        self.hooks = list(hooks)
        self.extra_state = dict(extra_state or {})
        self.name = name
        self.is_main = is_main
        self.world_size = world_size
        self.max_iters_per_epoch = int(max_iters_per_epoch)
        self.grad_hook = grad_hook
        self.stop = stop
        self.notes: list[str] = []
        if amp not in ("none", "fp16", "bf16"):
            raise ValueError(f"amp must be none, fp16 or bf16, got {amp!r}")
        if amp != "none" and self.device.type != "cuda":
            self.notes.append(f"amp={amp} needs a CUDA device; training in float32 on {self.device.type}")
            amp = "none"
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))
        # counters
        self.epoch = 0  # current (0-based) epoch
        self.iter_in_epoch = 0  # batches done in the current epoch
        self.global_iter = 0  # optimiser steps done in this stage
        self.iters_per_epoch = 0
        self.resumed_mid_epoch = False
        self.last_losses: dict[str, float] = {}
        self.finished = False

    # ------------------------------------------------------------------ helpers
    def autocast(self):
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def call(self, event: str, *args) -> None:
        for h in self.hooks:
            getattr(h, event)(self, *args)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def lrs(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        """Run (or continue) the stage until ``max_epochs``."""
        self.call("before_train")
        while self.epoch < self.max_epochs:
            self.sampler.set_epoch(self.epoch, self.iter_in_epoch)
            self.iters_per_epoch = self.sampler.batches_per_epoch()
            if self.max_iters_per_epoch:
                self.iters_per_epoch = min(self.iters_per_epoch, self.max_iters_per_epoch)
            self.call("before_epoch")
            self.model.train()
            for batch in self.loader:
                if self.iter_in_epoch >= self.iters_per_epoch:
                    break
                if self.stop_requested():
                    self.call("on_interrupt")
                    raise TrainingInterrupted(f"{self.name} stopped at epoch {self.epoch + 1}, "
                                              f"iteration {self.iter_in_epoch}")
                self.train_step(batch)
            self.call("after_epoch")
            self.epoch += 1
            self.iter_in_epoch = 0
            self.resumed_mid_epoch = False
        self.finished = True
        self.call("after_train")

    def stop_requested(self) -> bool:
        """True when a stop was requested here or, under DDP, on any rank (all ranks stop at the same step)."""
        local = bool(self.stop()) if self.stop is not None else False
        if self.world_size > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([1.0 if local else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            return bool(flag.item() > 0)
        return local

    def train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if self.scheduler is not None:
            self.scheduler.on_iteration(self.epoch, self.iter_in_epoch, self.iters_per_epoch)
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with self.autocast():
            terms = self.step_fn(self, batch)
        total = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        # one host synchronisation per step, once the backward pass is queued (a GPU keeps
        # working meanwhile): the logged values, and the finiteness check before any update
        values = torch.stack([v.detach().float() for v in terms.values()] + [total.detach().float()])
        local = values.tolist()
        if not math.isfinite(local[-1]):
            raise TrainingDiverged(f"{self.name}: loss is {local[-1]} at epoch {self.epoch + 1}, "
                                   f"iteration {self.iter_in_epoch + 1} ({ dict(zip(terms, local)) }); "
                                   "lower the learning rate or enable gradient clipping (optim.grad_clip)")
        if self.grad_hook is not None:  # e.g. gradient all-reduce for modules not wrapped in DDP
            self.grad_hook(self)
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iter_in_epoch += 1
        self.global_iter += 1
        if self.world_size > 1 and torch.distributed.is_initialized():  # log the mean over all ranks
            torch.distributed.all_reduce(values)
            values /= self.world_size
            local = values.tolist()
        losses = dict(zip([*terms.keys(), "total"], local))
        self.last_losses = losses
        self.call("after_step", losses)
        return losses

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this stage exactly where it is."""
        return {
            "stage": self.name,
            "epoch": self.epoch,
            "iter_in_epoch": self.iter_in_epoch,
            "global_iter": self.global_iter,
            "finished": self.finished,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "sampler": {"seed": self.sampler.seed, "epoch": self.epoch, "start_batch": self.iter_in_epoch},
            "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
            "rng": rng_state(),
            "time": time.time(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("stage") != self.name:
            raise ValueError(f"checkpoint is of stage {state.get('stage')!r}, not {self.name!r}")
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for k, v in self.extra_state.items():
            if k in state.get("extra", {}):
                v.load_state_dict(state["extra"][k])
        self.epoch = int(state["epoch"])
        self.iter_in_epoch = int(state["iter_in_epoch"])
        self.global_iter = int(state["global_iter"])
        self.finished = bool(state.get("finished", False))
        self.resumed_mid_epoch = self.iter_in_epoch > 0
        set_rng_state(state["rng"])


def is_finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
