"""Learning-rate schedules as functions of the (fractional) epoch.

* :class:`WarmupMultiStep` — MUVA/CLIP-ReID stage 2: linear warm-up from ``warmup_factor``
  to 1 over ``warmup_epochs``, then × ``gamma`` at each milestone.
* :class:`WarmupCosine` — stage 1: linear warm-up from the absolute ``warmup_lr`` to the
  base lr over ``warmup_epochs``, then cosine from the base lr to ``min_lr`` over
  ``max_epochs`` (timm's ``CosineLRScheduler`` with ``t_initial = max_epochs``).

:class:`LRScheduler` applies one of them to an optimizer; each param group keeps its own
base lr (``initial_lr``), so multipliers such as the mask predictor's × 10 are preserved.
It is stepped once per epoch (``per_iteration=False``, the reference) or every iteration
with a fractional epoch.  ``epoch_base`` is the epoch number the schedule sees in the first
epoch: the reference steps its schedulers with the 1-based epoch before each epoch
(``epoch_base=1``), so stage 2's first epoch already runs at 0.19× the base lr (warm-up
factor 0.1 over 10 epochs), its drops come at epochs 30 and 50 counted from 1, and stage
1's last epoch reaches the cosine floor.  ``epoch_base=0`` starts at the warm-up value.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["WarmupMultiStep", "WarmupCosine", "Constant", "LRScheduler", "build_schedule"]


@dataclass
class WarmupMultiStep:
    milestones: Sequence[int] = (30, 50)
    gamma: float = 0.1
    warmup_epochs: float = 10
    warmup_factor: float = 0.1

    def lr(self, base_lr: float, epoch: float) -> float:
        factor = 1.0
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            factor = self.warmup_factor * (1 - alpha) + alpha
        return base_lr * factor * self.gamma ** bisect.bisect_right(list(self.milestones), epoch)


@dataclass
class WarmupCosine:
    max_epochs: int = 120
    warmup_epochs: float = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-6

    def lr(self, base_lr: float, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_lr + (base_lr - self.warmup_lr) * epoch / self.warmup_epochs
        t = min(epoch, self.max_epochs) / max(self.max_epochs, 1e-12)
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * t))


@dataclass
class Constant:
    def lr(self, base_lr: float, epoch: float) -> float:
        return base_lr


class LRScheduler:
    """Sets every param group's lr to ``schedule.lr(group["initial_lr"], epoch)``."""

    def __init__(self, optimizer, schedule, per_iteration: bool = False, epoch_base: int = 1):
        self.optimizer = optimizer
        self.schedule = schedule
        self.per_iteration = per_iteration
        self.epoch_base = int(epoch_base)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.last_epoch = 0.0
        self.step_to(0.0)

    def step_to(self, epoch: float) -> None:
        """Set the lr for the (0-based, possibly fractional) training epoch ``epoch``."""
        self.last_epoch = float(epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = self.schedule.lr(g["initial_lr"], self.last_epoch + self.epoch_base)

    def on_iteration(self, epoch: int, it: int, iters_per_epoch: int) -> None:
        """Called before every optimiser step (``epoch`` 0-based); per-epoch schedules change only at ``it == 0``."""
        if self.per_iteration:
            self.step_to(epoch + it / max(1, iters_per_epoch))
        elif it == 0 or self.last_epoch != epoch:
            self.step_to(epoch)

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.step_to(state["last_epoch"])


def build_schedule(name: str, *, max_epochs: int, warmup_epochs: float, warmup_factor: float = 0.1,
                   warmup_lr: float = 1e-5, min_lr: float = 1e-6, milestones: Sequence[int] = (), gamma: float = 0.1):
    """Schedule by name: ``multistep``, ``cosine`` or ``constant``."""
    if name == "multistep":
        return WarmupMultiStep(tuple(milestones), gamma, warmup_epochs, warmup_factor)
    if name == "cosine":
        return WarmupCosine(max_epochs, warmup_epochs, warmup_lr, min_lr)
    if name == "constant":
        return Constant()
    raise ValueError(f"unknown lr schedule {name!r}; choose multistep, cosine or constant")


def scheduler_from_config(optimizer, sc, epochs: int) -> LRScheduler:
    """The :class:`LRScheduler` of a stage's schedule config (``stage1.schedule`` / ``stage2.schedule``)."""
    schedule = build_schedule(sc.name, max_epochs=epochs, warmup_epochs=sc.warmup_epochs, warmup_factor=sc.warmup_factor,
                              warmup_lr=sc.warmup_lr, min_lr=sc.min_lr, milestones=sc.milestones, gamma=sc.gamma)
    return LRScheduler(optimizer, schedule, per_iteration=sc.per_iteration, epoch_base=sc.epoch_base)
