"""Model configuration: :class:`ModelConfig` (typed dataclass) and :func:`tiny_config`.

This module imports no torch, so command modules and config tools may use it freely.

* ``parts`` names the local visual tokens (default head, upper body, legs; ``shoes``
  is available).  An **empty list gives the CLIP-ReID-style global model**: no part
  tokens, no mask predictors, one prompt ("A photo of a X X X X person") — the
  baseline and MUVA share one code path.
* Defaults are the reference implementation's computation (the authors' released code);
  every option that departs from it is named and documented in docs/model.md,
  "muva vs the reference implementation".
* ``pretrained`` is an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``, ...),
  a path to a local file (OpenAI ``ViT-B-16.pt`` TorchScript archive or state dict,
  open_clip checkpoint with ``state_dict``, or ``.safetensors``), or ``none`` for
  random initialisation.
* ``arch`` overrides fields of the open_clip architecture named by ``backbone`` (used
  for tiny test models; must stay empty with a pretrained tag).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional

#: test-time resize filters (``test_interpolation``); training's is ``data.transforms.interpolation``.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: ``torch.compile`` modes for the ``compile_mode`` key (see :mod:`muva.models.compile`).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")

from muva.data.parts import DEFAULT_PARTS, PART_PHRASES, check_parts

__all__ = ["ClipArch", "ModelConfig", "tiny_config", "NO_WEIGHTS", "LEGACY_MODEL_DEFAULTS", "COMPILE_MODES"]

#: what models saved before these options existed were built with (filled in by
#: :func:`muva.models.load_model` when a saved config lacks the key).
LEGACY_MODEL_DEFAULTS = {
    "mask_mlp_norm": False,
    "mask_qv_bias": True,
    "part_pos_embed": "tied",
    "pos_embed_interpolation": "bicubic",
    "neck_momentum": 0.1,
    "test_interpolation": "bicubic",
}

#: values of ``pretrained`` that mean "random initialisation".
NO_WEIGHTS = ("", "none", "random", "null")


@dataclass
class ClipArch:
    """Overrides of the open_clip architecture (``None`` = take the backbone's value)."""

    embed_dim: Optional[int] = None
    image_size: Optional[int] = None  # the pretrained input side (grid = image_size // patch_size)
    patch_size: Optional[int] = None
    vision_width: Optional[int] = None
    vision_layers: Optional[int] = None
    vision_heads: Optional[int] = None
    text_width: Optional[int] = None
    text_layers: Optional[int] = None
    text_heads: Optional[int] = None
    context_length: Optional[int] = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__dataclass_fields__)


@dataclass
class ModelConfig:
    """Everything needed to build a :class:`~muva.models.MuvaModel` (see docs/model.md)."""

    # --- backbone and weights
    backbone: str = "ViT-B-16"  # open_clip model name (ViT-B-16, ViT-B-32, ViT-L-14; "ViT-B/16" accepted)
    pretrained: str = "openai"  # open_clip tag | path to a local checkpoint | none
    cache_dir: Optional[str] = None  # download cache for pretrained tags (open_clip's default when None)
    quick_gelu: Optional[bool] = None  # None = auto (True for OpenAI weights, the tag's setting otherwise)
    arch: ClipArch = field(default_factory=ClipArch)

    # --- input and patches
    input_size: tuple[int, int] = (256, 128)  # (H, W)
    stride: Optional[int] = None  # patch stride; None = the backbone's patch size (16 for ViT-B/16); 12 = overlapping
    freeze_patch_embed: bool = True  # freeze conv1 (MUVA default)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    # --- SIE camera embedding (added to CLS)
    sie: bool = False
    sie_coef: float = 1.0
    num_cameras: int = 0  # size of the camera embedding table (set from the training data)

    # --- part tokens and AM-MSA
    parts: list[str] = field(default_factory=lambda: list(DEFAULT_PARTS))
    part_init_std: float = 0.02
    mask_heads: int = 2  # heads of each mask predictor's cross-attention (reference: 2 for Market, 8 for MSMT17 training)
    mask_mlp_norm: bool = True  # LayerNorm before the mask predictor's MLP (reference RMP_USE_LAYER_NORM)
    mask_qv_bias: bool = False  # biases on the mask predictor's query/value projections (reference: none)
    mask_temperature: float = 1.0  # tau in sigmoid(logits / tau)
    mask_threshold: float = 0.5  # offline gating: patch in part when sigmoid(logits / tau) > threshold
    mask_gating: Literal["offline", "online"] = "offline"
    online_margin: float = 5.0  # online gating: mask probability mapped linearly into [-m, m]
    grad_checkpointing: bool = False
    part_pos_embed: Literal["own", "tied"] = "own"  # own: trainable rows initialised from CLS's (reference); tied: CLS's row
    pos_embed_interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # pretrained 14x14 → input grid (reference: bilinear)
    neck_momentum: float = 0.19  # BN-neck running-stat momentum; 0.19 = the reference's two BN updates per step at 0.1
    test_interpolation: str = "bilinear"  # resize of test / feature-extraction images (reference: bilinear)

    # --- prompts (text side)
    n_ctx: int = 4  # learnable context tokens per identity and granularity
    prompt_init_std: float = 0.002
    global_template: str = "A photo of a {ctx} person"  # no final period, as the reference
    part_template: str = "A photo of a {ctx} {part} of a person"
    # part_prompts=false (an ablation, not the paper's method): only the global prompt is learned; the text
    # side aligns with the CLS feature alone, the part tokens keep their masks but get no text of their own
    part_prompts: bool = True
    text_chunk_size: int = 256  # identities per chunk when computing all text features

    # --- heads
    classifier_init_std: float = 0.001

    def __post_init__(self) -> None:
        self.parts = list(check_parts(self.parts))
        h, w = self.input_size
        if h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive (H, W), got {self.input_size}")
        if self.stride is not None and self.stride <= 0:
            raise ValueError(f"stride must be positive, got {self.stride}")
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if "{ctx}" not in self.global_template:
            raise ValueError(f"global_template must contain '{{ctx}}', got {self.global_template!r}")
        if "{ctx}" not in self.part_template or "{part}" not in self.part_template:
            raise ValueError(f"part_template must contain '{{ctx}}' and '{{part}}', got {self.part_template!r}")
        if self.mask_temperature <= 0:
            raise ValueError(f"mask_temperature must be > 0, got {self.mask_temperature}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must lie in (0, 1), got {self.mask_threshold}")
        if self.mask_heads < 1:
            raise ValueError(f"mask_heads must be >= 1, got {self.mask_heads}")
        if not 0.0 < self.neck_momentum <= 1.0:
            raise ValueError(f"neck_momentum must lie in (0, 1], got {self.neck_momentum}")
        if self.test_interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown test_interpolation {self.test_interpolation!r}; use {', '.join(INTERPOLATIONS)}")
        if self.num_cameras < 0:
            raise ValueError(f"num_cameras must be >= 0, got {self.num_cameras}")

    # ------------------------------------------------------------------ derived
    @property
    def backbone_name(self) -> str:
        """open_clip's spelling of the backbone (``ViT-B/16`` → ``ViT-B-16``)."""
        return self.backbone.replace("/", "-")

    @property
    def uses_pretrained(self) -> bool:
        return str(self.pretrained).strip().lower() not in NO_WEIGHTS

    @property
    def granularities(self) -> list[str]:
        """``["global", *parts]``: one prompt / one text-aligned feature chunk each (``["global"]`` without part prompts)."""
        return ["global", *self.parts] if self.part_prompts else ["global"]

    def templates(self) -> list[str]:
        """The prompt of every granularity with the context placeholder written as ``X X X X``."""
        ctx = " ".join(["X"] * self.n_ctx)
        out = [self.global_template.format(ctx=ctx)]
        out += [self.part_template.format(ctx=ctx, part=PART_PHRASES[p]) for p in self.granularities[1:]]
        return out

    def with_overrides(self, **kwargs) -> "ModelConfig":
        return replace(self, **kwargs)


def tiny_config(**overrides) -> ModelConfig:
    """A tiny random model for tests: 2 layers, width 64, 2 heads, small text tower, 128×64 input.

    Grid 8×4 = 32 patches at stride 16; builds in well under a second on a CPU.
    """
    cfg = ModelConfig(
        backbone="ViT-B-16",
        pretrained="none",
        quick_gelu=True,
        arch=ClipArch(
            embed_dim=32,
            image_size=64,
            patch_size=16,
            vision_width=64,
            vision_layers=2,
            vision_heads=2,
            text_width=32,
            text_layers=1,
            text_heads=2,
            context_length=32,
        ),
        input_size=(128, 64),
        stride=16,
        mask_heads=2,
        text_chunk_size=8,
    )
    return replace(cfg, **overrides) if overrides else cfg
