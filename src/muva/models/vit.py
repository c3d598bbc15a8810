"""The MUVA visual encoder on top of open_clip's ``VisionTransformer`` weights.

The open_clip module is kept as ``self.vit`` (its parameters: conv1, class_embedding,
positional_embedding, ln_pre, transformer.resblocks[*].{ln_1, attn.in_proj_*,
attn.out_proj, ln_2, mlp}, ln_post, proj); the forward pass is ours:

* conv1 runs at the configured stride (16, or 12 for overlapping 16-pixel patches);
* the position embedding is resized from the pretrained grid to the input grid once, at
  construction (``resize_pos_embed``; bilinear without antialiasing as the reference,
  or bicubic with antialiasing: ``model.pos_embed_interpolation``);
* the token sequence is ``[CLS, part_1 … part_R, patch_1 … patch_L]``; part tokens are
  new parameters (trunc-normal).  Each part token has its own trainable position
  embedding row, initialised as a copy of CLS's (``part_pos_embed``, the reference), or
  shares CLS's row (``model.part_pos_embed=tied``);
* an optional SIE camera embedding (× coefficient) is added to CLS;
* every layer runs attention through ``scaled_dot_product_attention`` with the AM-MSA
  mask of :mod:`muva.models.masking` (no mask at all for the global baseline, R = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from muva.models.masking import (MaskPredictor, attention_mask_index, build_attention_mask, mask_constants, part_patch_gate,
                                 pseudo_gate)
from muva.utils.geometry import patch_grid

__all__ = ["MuvaVisionEncoder", "VisionOutput", "resize_pos_embed"]


#: ``model.pos_embed_interpolation`` → ``F.interpolate`` arguments.
POS_EMBED_INTERPOLATION = {
    "bilinear": {"mode": "bilinear", "antialias": False},  # the reference (CLIP-ReID's resize)
    "bicubic": {"mode": "bicubic", "antialias": True},
}


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a ``(1 + rows*cols) × D`` position embedding to ``new_grid`` (CLS row kept).

    ``interpolation``: ``bilinear`` (no antialiasing, the reference) or ``bicubic`` (antialiased).
    """
    if interpolation not in POS_EMBED_INTERPOLATION:
        raise ValueError(f"unknown position-embedding interpolation {interpolation!r}; use {', '.join(POS_EMBED_INTERPOLATION)}")
    cls, grid = pos[:1], pos[1:]
    if grid.shape[0] != old_grid[0] * old_grid[1]:
        raise ValueError(f"position embedding has {grid.shape[0]} grid rows, expected {old_grid[0]}×{old_grid[1]}")
    d = grid.shape[1]
    img = grid.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=tuple(new_grid), align_corners=False, **POS_EMBED_INTERPOLATION[interpolation])
    grid = img.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], d).to(pos.dtype)
    return torch.cat([cls, grid], dim=0)


@dataclass
class VisionOutput:
    """``tokens``: B×(1+R)×E projected CLS + part tokens; ``mask_logits``: per layer B×R×L."""

    tokens: torch.Tensor
    mask_logits: list[torch.Tensor]


def _check_supported(vit: nn.Module) -> None:
    problems = []
    if getattr(vit, "attn_pool", None) is not None:
        problems.append("attentional pooling")
    if getattr(vit, "pool_type", "tok") != "tok":
        problems.append(f"pool_type={vit.pool_type}")
    if not isinstance(getattr(vit, "patch_dropout", nn.Identity()), nn.Identity):
        problems.append("patch dropout")
    blk = vit.transformer.resblocks[0]
    if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
        problems.append("custom attention blocks")
    if problems:
        raise ValueError(f"open_clip vision tower with {', '.join(problems)} is not supported by the MUVA encoder")


class MuvaVisionEncoder(nn.Module):
    """CLIP ViT with part tokens and adaptively masked self-attention.

    Args:
        vit: an open_clip ``VisionTransformer`` (weights already loaded).
        input_size: (H, W) of the input images.
        stride: patch stride (conv1 stride); the kernel stays the pretrained patch size.
        num_parts: R (0 = the plain global model).
        mask_heads / temperature / threshold / gating / margin: AM-MSA settings.
        mask_mlp_norm / mask_qv_bias: mask-predictor options (see :class:`MaskPredictor`).
        part_pos_embed: ``own`` (trainable rows, copies of CLS's) or ``tied`` (CLS's row).
        pos_embed_interpolation: ``bilinear`` or ``bicubic`` (see :func:`resize_pos_embed`).
        num_cameras / sie_coef: SIE camera embedding (0 cameras = off).
        freeze_patch_embed: freeze conv1.
    """

    def __init__(
        self,
        vit: nn.Module,
        *,
        input_size: tuple[int, int] = (256, 128),
        stride: int | None = None,
        num_parts: int = 3,
        mask_heads: int = 2,
        temperature: float = 1.0,
        threshold: float = 0.5,
        gating: str = "offline",
        margin: float = 5.0,
        num_cameras: int = 0,
        sie_coef: float = 1.0,
        freeze_patch_embed: bool = True,
        part_init_std: float = 0.02,
        grad_checkpointing: bool = False,
        mask_mlp_norm: bool = True,
        mask_qv_bias: bool = False,
        part_pos_embed: str = "own",
        pos_embed_interpolation: str = "bilinear",
    ):
        super().__init__()
        _check_supported(vit)
        self.vit = vit
        self.width = vit.conv1.out_channels
        self.patch_size = int(vit.conv1.kernel_size[0])
        self.stride = int(stride or self.patch_size)
        if self.stride > self.patch_size:
            raise ValueError(f"stride {self.stride} is larger than the patch size {self.patch_size}; patches would skip pixels")
        vit.conv1.stride = (self.stride, self.stride)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.grid = patch_grid(self.input_size, stride=self.stride, patch=self.patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        old_grid = tuple(int(g) for g in vit.grid_size)
        with torch.no_grad():
            new_pos = resize_pos_embed(vit.positional_embedding.detach(), old_grid, self.grid, pos_embed_interpolation)
        vit.positional_embedding = nn.Parameter(new_pos)
        vit.grid_size = self.grid
        if freeze_patch_embed:
            vit.conv1.weight.requires_grad_(False)
        self.heads = vit.transformer.resblocks[0].attn.num_heads
        self.num_layers = len(vit.transformer.resblocks)
        self.output_dim = int(vit.proj.shape[1]) if vit.proj is not None else self.width

        self.num_parts = int(num_parts)
        self.temperature, self.threshold, self.gating, self.margin = temperature, threshold, gating, margin
        if gating not in ("offline", "online"):
            raise ValueError(f"unknown mask gating {gating!r}; use 'offline' or 'online'")
        if self.num_parts:
            self.part_tokens = nn.Parameter(torch.empty(self.num_parts, self.width))
            nn.init.trunc_normal_(self.part_tokens, std=part_init_std)
            self.mask_predictors = nn.ModuleList(
                MaskPredictor(self.width, self.num_patches, mask_heads, mlp_norm=mask_mlp_norm, qv_bias=mask_qv_bias)
                for _ in range(self.num_layers)
            )
            # where each attention-mask entry comes from (one gather per layer), kept on the model's device
            self.register_buffer("mask_index", attention_mask_index(self.num_parts, self.num_patches), persistent=False)
            self.register_buffer("mask_consts", mask_constants(), persistent=False)
        else:
            self.part_tokens = None
            self.mask_predictors = nn.ModuleList()
        if part_pos_embed not in ("own", "tied"):
            raise ValueError(f"unknown part_pos_embed {part_pos_embed!r}; use 'own' or 'tied'")
        self.part_pos_embed = None
        if self.num_parts and part_pos_embed == "own":
            self.part_pos_embed = nn.Parameter(new_pos[:1].clone().repeat(self.num_parts, 1))
        self.num_cameras = int(num_cameras)
        self.sie_coef = float(sie_coef)
        if self.num_cameras:
            self.cv_embed = nn.Parameter(torch.empty(self.num_cameras, self.width))
            nn.init.trunc_normal_(self.cv_embed, std=0.02)
        else:
            self.cv_embed = None
        self.grad_checkpointing = grad_checkpointing

    # ------------------------------------------------------------------ pieces
    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """Images B×3×H×W → tokens B×(1+R+L)×D after ``ln_pre``."""
        vit = self.vit
        if tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(f"images are {tuple(images.shape[-2:])} (H, W) but the model expects {self.input_size}; resize them first")
        x = vit.conv1(images.to(vit.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # B×L×D
        b = x.shape[0]
        pos = vit.positional_embedding.to(x.dtype)
        cls = (vit.class_embedding.to(x.dtype) + pos[0]).expand(b, 1, -1)
        if self.cv_embed is not None and camids is not None:
            camids = camids.to(device=x.device, dtype=torch.long).view(-1)
            cls = cls + self.sie_coef * self.cv_embed[camids].to(x.dtype).unsqueeze(1)
        seq = [cls]
        if self.num_parts:
            part_pos = self.part_pos_embed.to(x.dtype) if self.part_pos_embed is not None else pos[:1]
            seq.append((self.part_tokens.to(x.dtype) + part_pos).expand(b, -1, -1))
        seq.append(x + pos[1:])
        return vit.ln_pre(torch.cat(seq, dim=1))

    @staticmethod
    def block(blk: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, queries: int | None = None) -> torch.Tensor:
        """One open_clip residual block with our attention (one broadcast mask for all heads).

        ``queries``: compute the output of the first ``queries`` tokens only (all tokens
        still serve as keys and values) — the last layer, whose patch outputs nothing
        reads, skips the attention, output projection and MLP of every patch.
        """
        attn = blk.attn
        b, n, d = x.shape
        h = attn.num_heads
        qkv = F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        if queries is not None and queries < n:
            # (the QKV product stays one GEMM over all tokens: simplest, and only the
            # patches' query projection, 1/12 of the block, is computed in vain)
            q, x, n = q[:, :, :queries], x[:, :queries], queries
            if mask is not None:
                mask = mask[:, :, :queries]
        if mask is not None:
            mask = mask.to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(b, n, d)
        x = x + blk.ls_1(attn.out_proj(o))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    def _gate(self, logits: torch.Tensor) -> torch.Tensor:
        return part_patch_gate(
            logits, gating=self.gating, temperature=self.temperature, threshold=self.threshold, margin=self.margin
        )

    def attention_mask(self, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The B×1×N×N additive mask of the part↔patch values ``gate`` (B×R×L), in ``dtype``."""
        return build_attention_mask(gate, dtype, self.mask_index, self.mask_consts)

    def check_masks(self, masks: torch.Tensor) -> None:
        want = (self.num_parts, self.num_patches)
        if masks.ndim != 3 or tuple(masks.shape[1:]) != want:
            raise ValueError(
                f"pseudo_masks must be B×{want[0]}×{want[1]} (parts × patches of the {self.grid[0]}×{self.grid[1]} grid), "
                f"got {tuple(masks.shape)}"
            )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: torch.Tensor,
        *,
        pseudo_masks: torch.Tensor | None = None,
        camids: torch.Tensor | None = None,
        predict_masks: bool | None = None,
    ) -> VisionOutput:
        """Encode images → projected ``[CLS, parts]`` tokens and every layer's mask logits.

        With ``pseudo_masks`` (B×R×L, bool or 0/1), attention follows them in every layer
        instead of the predicted masks, and the mask predictors are not run (``mask_logits``
        is empty) unless ``predict_masks=True``.
        """
        x = self.embed(images, camids)
        r = self.num_parts
        # the mask is built in the dtype attention runs in (autocast's), not cast once per layer
        dev = x.device.type
        autocast = torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)
        attn_dtype = torch.get_autocast_dtype(dev) if autocast else x.dtype
        fixed = None
        if r and pseudo_masks is not None:
            self.check_masks(pseudo_masks)
            fixed = self.attention_mask(pseudo_gate(pseudo_masks.to(x.device), dtype=attn_dtype), attn_dtype)
        run_predictors = bool(r) and (fixed is None if predict_masks is None else predict_masks)
        if r and fixed is None and not run_predictors:
            raise ValueError("predict_masks=False needs pseudo_masks: the part tokens need masks from somewhere")
        logits_acc: torch.Tensor | None = None
        all_logits: list[torch.Tensor] = []
        last = self.num_layers - 1
        for i, blk in enumerate(self.vit.transformer.resblocks):
            # only [CLS, parts] of the last layer's output are read (and its mask logits
            # come from the predictor before it), so its patch outputs are not computed
            queries = 1 + r if i == last else None
            mask = fixed
            if run_predictors:
                # split (views; one concatenation in backward) rather than two slices (two
                # zero-filled full-size gradients and their sum): the same numbers, fewer kernels
                _, parts, patches = x.split((1, r, self.num_patches), dim=1)
                inc = self.mask_predictors[i](parts, patches)
                logits_acc = inc if logits_acc is None else logits_acc + inc
                all_logits.append(logits_acc)
                if fixed is None:
                    mask = self.attention_mask(self._gate(logits_acc), attn_dtype)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(self.block, blk, x, mask, queries, use_reentrant=False)
            else:
                x = self.block(blk, x, mask, queries)
        tokens = self.vit.ln_post(x[:, : 1 + r])
        if self.vit.proj is not None:
            tokens = tokens @ self.vit.proj.to(tokens.dtype)
        return VisionOutput(tokens=tokens, mask_logits=all_logits)

    def mask_probabilities(self, mask_logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-layer mask probabilities ``sigmoid(logits / τ)``."""
        return [torch.sigmoid(l / self.temperature) for l in mask_logits]

    def extra_repr(self) -> str:
        return (
            f"grid={self.grid}, stride={self.stride}, patch={self.patch_size}, parts={self.num_parts}, "
            f"gating={self.gating}, sie_cameras={self.num_cameras}"
        )

