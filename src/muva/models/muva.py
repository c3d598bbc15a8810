"""``MuvaModel``: the MUVA re-ID model (and, with no parts, the CLIP-ReID global baseline).

    >>> import torch
    >>> from muva.models import build_model, tiny_config
    >>> model = build_model(tiny_config(), num_classes=5)
    >>> out = model(torch.randn(2, 3, 128, 64))
    >>> out["logits"].shape, out["features"].shape, len(out["mask_logits"]), out["mask_logits"][0].shape
    (torch.Size([2, 5]), torch.Size([2, 128]), 2, torch.Size([2, 3, 32]))
    >>> torch.allclose(model.extract(torch.randn(2, 3, 128, 64)).norm(dim=1), torch.ones(2))
    True
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from muva.models.clip_loading import LoadReport, build_clip
from muva.models.config import ModelConfig
from muva.models.heads import BNNeck, IdentityClassifier
from muva.models.prompts import PromptLearner, TextEncoder, get_tokenizer
from muva.models.vit import MuvaVisionEncoder
from muva.utils.progress import track

__all__ = ["MuvaModel", "build_model", "IDENTITY_KEYS"]

log = logging.getLogger("muva.models")

#: state-dict entries that depend on the training identities (skipped for inference elsewhere).
IDENTITY_KEYS = ("prompts.ctx", "classifier.fc.weight")


class MuvaModel(nn.Module):
    """CLIP ViT with part tokens + AM-MSA, multi-grained prompts, BNNeck and ID classifier.

    Build it with :func:`build_model`.  Useful attributes: ``cfg``, ``parts``, ``grid``
    (rows, cols), ``num_patches``, ``num_layers``, ``feature_dim`` ((1+R)·embed),
    ``embed_dim``, ``num_classes``, ``stride``, ``input_size``.
    """

    def __init__(self, cfg: ModelConfig, clip: nn.Module, num_classes: int = 0, *, load_report: LoadReport | None = None):
        super().__init__()
        self.cfg = cfg
        self.load_report = load_report
        num_cameras = cfg.num_cameras if cfg.sie else 0
        if cfg.sie and num_cameras <= 0:
            raise ValueError("model.sie=true needs model.num_cameras (the number of training cameras) > 0")
        self.visual = MuvaVisionEncoder(
            clip.visual,
            input_size=cfg.input_size,
            stride=cfg.stride,
            num_parts=len(cfg.parts),
            mask_heads=cfg.mask_heads,
            temperature=cfg.mask_temperature,
            threshold=cfg.mask_threshold,
            gating=cfg.mask_gating,
            margin=cfg.online_margin,
            num_cameras=num_cameras,
            sie_coef=cfg.sie_coef,
            freeze_patch_embed=cfg.freeze_patch_embed,
            part_init_std=cfg.part_init_std,
            grad_checkpointing=cfg.grad_checkpointing,
            mask_mlp_norm=cfg.mask_mlp_norm,
            mask_qv_bias=cfg.mask_qv_bias,
            part_pos_embed=cfg.part_pos_embed,
            pos_embed_interpolation=cfg.pos_embed_interpolation,
        )
        self.text = TextEncoder(clip)
        for p in self.text.parameters():  # CLIP's text tower is never trained in MUVA / CLIP-ReID
            p.requires_grad_(False)
        self.tokenizer = get_tokenizer(cfg.backbone_name, self.text.context_length)
        self.templates = cfg.templates()
        self.embed_dim = self.visual.output_dim
        if self.text.output_dim != self.embed_dim:
            raise ValueError(f"image embed dim {self.embed_dim} != text embed dim {self.text.output_dim}")
        self.feature_dim = (1 + len(cfg.parts)) * self.embed_dim
        self.num_classes = int(num_classes or 0)
        self.prompts = (
            PromptLearner(self.num_classes, self.templates, self.text.token_embedding, self.tokenizer, cfg.n_ctx, cfg.prompt_init_std)
            if self.num_classes
            else None
        )
        self.neck = BNNeck(self.feature_dim, cfg.neck_momentum)
        self.classifier = IdentityClassifier(self.feature_dim, self.num_classes, cfg.classifier_init_std) if self.num_classes else None

    # ------------------------------------------------------------------ geometry
    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.cfg.parts)

    @property
    def num_parts(self) -> int:
        return len(self.cfg.parts)

    @property
    def grid(self) -> tuple[int, int]:
        return self.visual.grid

    @property
    def num_patches(self) -> int:
        return self.visual.num_patches

    @property
    def num_layers(self) -> int:
        return self.visual.num_layers

    @property
    def stride(self) -> int:
        return self.visual.stride

    @property
    def patch_size(self) -> int:
        return self.visual.patch_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self.visual.input_size

    # ------------------------------------------------------------------ image side
    def forward(
        self,
        images: torch.Tensor,
        *,
        pseudo_masks: torch.Tensor | None = None,
        camids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Training forward.

        Returns a dict: ``features`` (pre-BN concatenation of the projected CLS and part
        tokens, B×feature_dim), ``proj_features`` (the feature aligned with the text: the same
        concatenation, or the projected CLS token alone when ``cfg.part_prompts`` is false),
        ``bn_features``, ``logits`` (B×num_classes, ``None`` without a classifier), ``tokens``
        (B×(1+R)×embed) and ``mask_logits`` (per layer B×R×L, accumulated).
        ``pseudo_masks`` (B×R×L) drive attention instead of the predicted masks (stage 1).
        """
        out = self.visual(images, pseudo_masks=pseudo_masks, camids=camids)
        feats = out.tokens.flatten(1)
        bn = self.neck(feats)
        logits = self.classifier(bn) if self.classifier is not None else None
        return {
            "logits": logits,
            "features": feats,
            "proj_features": feats if self.cfg.part_prompts else out.tokens[:, 0],
            "bn_features": bn,
            "tokens": out.tokens,
            "mask_logits": out.mask_logits,
        }

    @torch.no_grad()
    def extract(
        self,
        images: torch.Tensor,
        *,
        before_bn: bool = False,
        return_masks: bool = False,
        pseudo_masks: torch.Tensor | None = None,
        camids: torch.Tensor | None = None,
    ):
        """Test features: L2-normalised BN-neck output (or the pre-BN feature with ``before_bn``).

        Runs in eval mode (the previous mode is restored).  With ``return_masks`` returns
        ``(features, masks)`` where ``masks`` is a list, one per layer, of B×R×L predicted
        mask probabilities ``sigmoid(logits/τ)`` (empty for the global model).
        """
        was_training = self.training
        self.eval()
        try:
            out = self.visual(images, pseudo_masks=pseudo_masks, camids=camids)
            f = out.tokens.flatten(1)
            if not before_bn:
                f = self.neck(f)
            f = F.normalize(f.float(), dim=1)
        finally:
            self.train(was_training)
        if return_masks:
            return f, self.visual.mask_probabilities(out.mask_logits)
        return f

    # ------------------------------------------------------------------ text side
    def _require_prompts(self) -> PromptLearner:
        if self.prompts is None:
            raise RuntimeError(
                "this model has no identity prompts (built or loaded with num_classes=None/0, e.g. for inference); "
                "build it with num_classes=<training identities> to use the text side"
            )
        return self.prompts

    def encode_text(self, pids: torch.Tensor) -> torch.Tensor:
        """Text features of identities ``pids`` (B) → B×(G·embed_dim): the projections of the G granularities concatenated."""
        prompts = self._require_prompts()
        emb = prompts(pids)  # B×G×T×W
        b, g, t, w = emb.shape
        eot = prompts.eot_index.to(emb.device).repeat(b)
        feats = self.text(emb.reshape(b * g, t, w), eot)
        return feats.reshape(b, g * feats.shape[-1])

    @torch.no_grad()
    def text_features(self, chunk_size: int | None = None, device: torch.device | str | None = None, progress: bool = True) -> torch.Tensor:
        """Text features of every identity (N×G·embed_dim), computed in chunks without gradients."""
        prompts = self._require_prompts()
        chunk = int(chunk_size or self.cfg.text_chunk_size)
        dev = prompts.ctx.device
        starts = list(range(0, self.num_classes, chunk))
        out = []
        for s in track(starts, description="text features", disable=not progress or len(starts) < 2):
            pids = torch.arange(s, min(s + chunk, self.num_classes), device=dev)
            f = self.encode_text(pids)
            out.append(f.to(device) if device is not None else f)
        return torch.cat(out, dim=0)

    # ------------------------------------------------------------------ parameters
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``mask_predictor``, ``visual`` (backbone, part tokens, SIE), ``heads``, ``prompts``, ``text``."""
        groups: dict[str, list[nn.Parameter]] = {k: [] for k in ("mask_predictor", "visual", "heads", "prompts", "text")}
        for name, p in self.named_parameters():
            if name.startswith("visual.mask_predictors."):
                groups["mask_predictor"].append(p)
            elif name.startswith("visual."):
                groups["visual"].append(p)
            elif name.startswith(("neck.", "classifier.")):
                groups["heads"].append(p)
            elif name.startswith("prompts."):
                groups["prompts"].append(p)
            else:
                groups["text"].append(p)
        return groups

    def count_parameters(self) -> dict[str, int]:
        """Number of parameters per group and in total."""
        counts = {k: sum(p.numel() for p in v) for k, v in self.parameter_groups().items()}
        counts["total"] = sum(counts.values())
        return counts


def build_model(
    cfg: ModelConfig,
    num_classes: int | None = 0,
    *,
    num_cameras: int | None = None,
    load_weights: bool = True,
    device: torch.device | str | None = None,
) -> MuvaModel:
    """Build a :class:`MuvaModel` from a config.

    Args:
        cfg: the model config (``pretrained`` decides the CLIP weights).
        num_classes: training identities (prompts + classifier); 0/None = inference only.
        num_cameras: overrides ``cfg.num_cameras`` (SIE table size).
        load_weights: False skips the CLIP weights (random init), e.g. before loading a muva checkpoint.
        device: move the model there.
    """
    if num_cameras is not None:
        cfg = replace(cfg, num_cameras=int(num_cameras))
    clip, report = build_clip(cfg, load_weights=load_weights)
    model = MuvaModel(cfg, clip, num_classes or 0, load_report=report)
    if device is not None:
        model = model.to(device)
    return model
