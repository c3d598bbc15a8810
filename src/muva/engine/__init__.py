"""Training engine: experiment configs, the hook-based trainer, MUVA's two stages,
checkpoints and resume, distributed training, logs, evaluation during training, the
protocol runner and ``muva demo``.

Entry points: :func:`muva.engine.config.load_experiment` and
:class:`muva.engine.run.Experiment` (what ``muva train`` runs).  Submodules import torch;
this package file does not.
"""
