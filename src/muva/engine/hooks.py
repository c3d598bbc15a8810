"""Hooks shared by the stages: checkpoints (last / best), evaluation, cluster-memory rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from muva.engine.checkpoint import save_checkpoint
from muva.engine.trainer import Hook, Trainer

__all__ = ["CheckpointHook", "EvalHook", "CallbackHook"]


class CheckpointHook(Hook):
    """Writes ``last.pt`` every ``every`` iterations and at every epoch end (rank 0 only).

    ``extra()`` returns run-level entries stored beside the trainer state (config,
    identity count, stage-1 results, best metric, ...).
    """

    def __init__(self, run_dir: str | Path, extra: Callable[[], Mapping[str, Any]], every: int = 0, enabled: bool = True):
        self.path = Path(run_dir) / "last.pt"
        self.extra = extra
        self.every = int(every)
        self.enabled = enabled
        self.saves = 0

    def state(self, trainer: Trainer) -> dict[str, Any]:
        state = trainer.state_dict()
        if state["iter_in_epoch"] >= trainer.iters_per_epoch > 0:  # epoch complete: resume at the next one
            state["epoch"] += 1
            state["iter_in_epoch"] = 0
            state["sampler"]["epoch"] = state["epoch"]
            state["sampler"]["start_batch"] = 0
        return {**self.extra(), "trainer": state}

    def save(self, trainer: Trainer, path: Path | None = None, **extra: Any) -> None:
        if self.enabled:
            save_checkpoint(path or self.path, {**self.state(trainer), **extra})
            self.saves += 1

    def after_step(self, trainer: Trainer, losses) -> None:
        if self.every and trainer.global_iter % self.every == 0 and trainer.iter_in_epoch < trainer.iters_per_epoch:
            self.save(trainer)

    def after_epoch(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer)


class EvalHook(Hook):
    """Evaluates every ``every`` epochs and after the last; with ``best_path``, keeps the epoch
    with the best mean ``best_metric`` there (labelled as selected on the target test set).

    ``evaluate(trainer) -> {target: result}`` runs on every rank (features are sharded and
    gathered); ``on_result(trainer, results, is_best)`` records them (rank 0 writes).
    """

    def __init__(self, evaluate: Callable, every: int, on_result: Callable, checkpoint: CheckpointHook | None,
                 best_metric: str = "mAP", best_path: str | Path | None = None, best: float | None = None):
        self.evaluate = evaluate
        self.every = int(every)
        self.on_result = on_result
        self.checkpoint = checkpoint
        self.best_metric = best_metric
        self.best_path = Path(best_path) if best_path else None
        self.best = best

    def due(self, trainer: Trainer) -> bool:
        last = trainer.epoch + 1 == trainer.max_epochs
        return last or (self.every > 0 and (trainer.epoch + 1) % self.every == 0)

    def after_epoch(self, trainer: Trainer) -> None:
        if not self.due(trainer):
            return
        results = self.evaluate(trainer)
        if not results:
            return
        score = sum(getattr(r, self.best_metric) for r in results.values()) / len(results)
        is_best = self.best is None or score > self.best
        if is_best:
            self.best = score
        self.on_result(trainer, results, is_best)
        if is_best and self.checkpoint is not None and self.best_path is not None:
            # labelled: whoever evaluates this file is told it was chosen by the target's test metrics
            self.checkpoint.save(trainer, self.best_path, selected_on="the target test set",
                                 selected_metric=self.best_metric, selected_epoch=trainer.epoch + 1)


class CallbackHook(Hook):
    """Wraps plain functions as hook callbacks (``before_epoch=fn`` etc.).

    Each keyword names a :class:`Hook` event and its function takes the same arguments as
    that event; an unknown name is an error rather than a callback that never runs.
    """

    EVENTS = ("before_train", "before_epoch", "after_step", "after_epoch", "after_train", "on_interrupt")

    def __init__(self, **callbacks: Callable):
        unknown = sorted(set(callbacks) - set(self.EVENTS))
        if unknown:
            raise ValueError(f"unknown hook event(s) {', '.join(unknown)}; valid: {', '.join(self.EVENTS)}")
        for event, fn in callbacks.items():
            setattr(self, event, fn)  # shadows the base class's no-op for this instance
