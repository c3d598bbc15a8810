"""Experiment configuration: one typed dataclass tree per training run.

Loaded with :func:`muva.config.load_config` (YAML with ``_base_:`` inheritance plus
``key.sub=value`` overrides); ``muva train -c CONFIG`` saves the resolved tree as
``<output.dir>/config.yaml``.  Defaults are MUVA's reference recipe (the paper's training section);
the presets in ``configs/`` only name data and deviations.  Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from muva.config import load_config
from muva.data.transform_config import TransformConfig  # re-exported: the config tree's data.transforms
from muva.grounding.config import GroundingConfig, RENAMED_GROUNDING_KEYS
from muva.models.config import COMPILE_MODES, ModelConfig

__all__ = ["TransformConfig", "DataConfig", "ScheduleConfig", "OptimConfig", "DEFAULT_LOSS_WEIGHTS", "Stage1Config", "Stage2Config",
           "EvalConfig", "GroundingConfig", "OutputConfig", "NON_RESULT_KEYS", "EVALUATION_KEYS", "ExperimentConfig", "load_experiment"]


@dataclass
class DataConfig:
    """Sources, targets, sampling and augmentation."""

    sources: list[str] = field(default_factory=list)  # dataset names or folders (Market layout / synthetic domain)
    source_split: Literal["train", "all"] = "train"  # "all" = train+query+gallery (Protocols 1 and 3)
    targets: list[str] = field(default_factory=list)  # evaluated on their query/gallery
    target_splits: dict[str, int] = field(default_factory=dict)  # target → number of query/gallery splits (mean reported)
    root: Optional[str] = None  # data root for registered names (default $MUVA_DATA or ./data)
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per dataset name, e.g. msmt17: {train_split: train+val}
    batch_size: int = 64  # global P×K batch (split over DDP processes)
    num_instances: int = 4  # K
    num_workers: int = 4
    eval_batch_size: int = 128
    on_bad_image: Literal["skip", "raise"] = "skip"
    check_images: bool = True  # scan every image before training (header read)
    transforms: TransformConfig = field(default_factory=TransformConfig)


@dataclass
class ScheduleConfig:
    name: Literal["multistep", "cosine", "constant"] = "multistep"
    warmup_epochs: float = 10
    warmup_factor: float = 0.1  # multistep: lr starts at factor × base
    warmup_lr: float = 1e-5  # cosine: absolute lr at epoch 0
    min_lr: float = 1e-6  # cosine floor
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1
    per_iteration: bool = False  # step every iteration (fractional epochs) instead of per epoch
    epoch_base: int = 1  # schedule value of the first epoch: 1 = the reference (stepped with the 1-based epoch), 0 = start of warm-up


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 5e-6
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    bias_lr_factor: float = 1.0  # CLIP-ReID uses 2
    weight_decay_bias: Optional[float] = None  # None = weight_decay
    lr_mult: dict[str, float] = field(default_factory=lambda: {"mask_predictor": 10.0})  # name substring → lr ×
    no_weight_decay: list[str] = field(default_factory=lambda: ["mask_predictor"])  # name substrings with wd 0
    grad_clip: float = 0.0  # max gradient norm; 0 = off


#: ``stage2.weights`` defaults (MUVA's objective; ``triplet`` is the CLIP-ReID baseline's).  Names a
#: config leaves out keep these; any other registered loss term (a plugin's) is off unless weighted.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"id": 1.0, "imp": 1.0, "i2t": 1.0, "mask": 1.0, "triplet": 0.0}


@dataclass
class Stage1Config:
    """Prompt learning: only the per-identity context tokens train."""

    enabled: bool = True
    epochs: int = 120
    loss: Literal["prompt", "supcon"] = "prompt"  # MUVA: CE vs image centroids; CLIP-ReID: i2t + t2i SupCon
    temperature: float = 1.0
    batch_size: int = 64
    num_instances: int = 4
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3.5e-4, lr_mult={}, no_weight_decay=[]))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(
        name="cosine", warmup_epochs=5, warmup_lr=1e-5, min_lr=1e-6, milestones=[]))
    use_pseudo_masks: bool = True  # drive the part tokens with the pseudo masks when extracting features
    normalize_before_mean: bool = False  # centroids: mean of raw features then L2 (reference) or of L2-normalised ones


@dataclass
class Stage2Config:
    """Image-encoder training with the text side frozen."""

    enabled: bool = True
    epochs: int = 60
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))  # loss name → weight, 0 = off (muva.losses.LOSSES)
    label_smoothing: float = 0.1
    memory_temperature: float = 0.01
    memory_momentum: float = 0.2
    memory_mode: Literal["hard", "mean"] = "hard"
    memory_masks: Literal["pseudo", "predicted"] = "pseudo"  # masks driving the part tokens in each epoch's memory rebuild
    triplet_margin: Optional[float] = 0.3
    mask_bce_weight: float = 1.0
    mask_dice_weight: float = 1.0
    mask_dice_smooth: float = 1.0e-3  # Dice smoothing on raw sums (reference: 1e-6 on sums scaled by 1/1000)

    def __post_init__(self):
        # a partial mapping ({center: 0.5}, stage2.weights.center=0.5) keeps the other defaults
        self.weights = {**DEFAULT_LOSS_WEIGHTS, **{str(k): float(v) for k, v in self.weights.items()}}


@dataclass
class EvalConfig:
    every: int = 10  # epochs of stage 2 between evaluations (0 = only at the end)
    metric: Literal["cosine", "euclidean"] = "cosine"
    before_bn: bool = False  # test feature: BN-neck output (MUVA) or the pre-BN feature
    ap: Literal["community", "official"] = "community"
    rerank: bool = False
    best_metric: Literal["mAP", "rank1"] = "mAP"
    # keep_best: also save best.pt, the epoch with the best target metric.  That is selection on the
    # target's test set (leakage in domain generalisation), so it is off and labelled as such; the
    # reported model (model.safetensors, results.*) is always the last epoch.
    keep_best: bool = False
    max_images: int = 0  # cap query+gallery per target for quick checks (0 = all)


@dataclass
class OutputConfig:
    dir: str = "runs/muva"
    checkpoint_every: int = 0  # iterations between last.pt writes (0 = only at epoch ends)
    log_every: int = 10  # iterations between metric records
    tensorboard: bool = True
    progress: bool = True  # live rich progress (disabled automatically when not a terminal)


@dataclass
class ExperimentConfig:
    """A complete MUVA (or CLIP-ReID baseline) experiment."""

    name: str = "muva"
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "fp16", "bf16"] = "fp16"  # GPU only
    compile: bool = False  # torch.compile the stage-2 training forward (CPU: needs a C++ compiler, CUDA: Triton)
    compile_mode: Literal[COMPILE_MODES] = "default"  # muva.models.config.COMPILE_MODES; reduce-overhead = CUDA graphs
    max_iters_per_epoch: int = 0  # cap (0 = full epochs); for smoke runs
    data: DataConfig = field(default_factory=DataConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)  # pseudo part masks: expert, options, caches
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    RENAMED_KEYS: ClassVar[dict[str, str]] = RENAMED_GROUNDING_KEYS  # older keys still accepted (muva.config.upgrade_tree)


#: Config keys that cannot change any number muva computes: where files go, how progress is shown,
#: loader threads, the weights cache folder, whether best.pt is also written.  A protocol setting is
#: reused across them and a run resumes across them.
NON_RESULT_KEYS = ("name", "output.dir", "output.progress", "output.log_every", "output.tensorboard",
                   "output.checkpoint_every", "eval.keep_best", "data.num_workers", "model.cache_dir")
#: Keys that change only how (and on what) a model is evaluated, never how it trains: a run resumes across them.
EVALUATION_KEYS = ("device", "data.eval_batch_size", "data.check_images", "data.targets", "data.target_splits", "eval")


def load_experiment(path=None, overrides=()) -> ExperimentConfig:
    """Load an :class:`ExperimentConfig` from YAML (``_base_`` inheritance) plus overrides."""

    return load_config(ExperimentConfig, path, overrides)
