"""What a training stage is given, and what it gives back.

A stage (:func:`muva.engine.stage1.run_stage1`, :func:`muva.engine.stage2.run_stage2`) reads
only its :class:`StageInputs` — the model, the training data and pseudo masks, the config,
the distributed context, the logger and a few callables of the run (checkpoint extras,
stop request) — and returns a :class:`StageResult`.  Nothing is written back onto the run:
the runner (:class:`muva.engine.run.Experiment`) decides what to do with the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["StageInputs", "StageResult", "EvalPlan", "set_trainable", "TRAINABLE"]

# Parameter groups (``model.parameter_groups()``) each stage trains.
TRAINABLE = {"stage1": ("prompts",), "stage2": ("mask_predictor", "visual", "heads")}


@dataclass(frozen=True)
class StageInputs:
    """Read-only inputs of a training stage.

    Attributes:
        cfg: the experiment config (each stage reads its own section plus ``data``, ``seed``,
            ``amp``, ``max_iters_per_epoch``, ``output``).
        model: the (bare) model being trained.
        train: :class:`muva.engine.data.TrainData` (records, labels, identity count).
        masks: pseudo masks ``{path: bool R×L}``, or None for a global model.
        train_ds / plain_ds: the training images with training / test transforms.
        dist: :class:`muva.engine.distributed.DistInfo`.
        logger: the run's :class:`muva.engine.logging.RunLogger` (rank 0 writes).
        run_dir: where checkpoints go.
        autocast: ``autocast()`` context factory for feature extraction.
        show_progress: live progress bars.
        stop: ``stop() -> bool``: a stop was requested (checked at step boundaries).
        checkpoint_extra: ``checkpoint_extra(stage1_done) -> dict`` of run-level checkpoint entries.
        initial_grad: ``{id(param): requires_grad as built}`` (frozen parts stay frozen).
        hooks: extra trainer hooks.
    """

    cfg: Any
    model: Any
    train: Any
    masks: Mapping[str, Any] | None
    train_ds: Any
    plain_ds: Any
    dist: Any
    logger: Any
    run_dir: Path
    autocast: Callable
    show_progress: bool
    stop: Callable[[], bool]
    checkpoint_extra: Callable[[bool], dict]
    initial_grad: Mapping[int, bool]
    hooks: tuple = ()

    def log(self, message: str) -> None:
        if self.dist.is_main:
            self.logger.print(message)


@dataclass(frozen=True)
class EvalPlan:
    """Evaluation during stage 2: ``evaluate(trainer) -> {target: result}`` and
    ``on_result(trainer, results, is_best)``; ``best`` is the best score so far (on resume)."""

    evaluate: Callable
    on_result: Callable
    best: float | None = None


@dataclass
class StageResult:
    """What a stage returns: its last logged losses and whether it ran to its end."""

    losses: dict[str, float] = field(default_factory=dict)
    finished: bool = False
    best: float | None = None  # stage 2: best evaluation score seen (only meaningful with eval.keep_best)


def set_trainable(model, stage: str, initial_grad: Mapping[int, bool]) -> None:
    """Stage 1: only the prompt tokens; stage 2: image side (as built: conv1 stays frozen), heads."""
    names = TRAINABLE[stage]
    for name, params in model.parameter_groups().items():
        for p in params:
            p.requires_grad_(name in names and initial_grad[id(p)])
