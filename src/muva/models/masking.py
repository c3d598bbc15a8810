"""Adaptively masked self-attention (AM-MSA): mask predictors and the additive attention mask.

Token order is ``[CLS, part_1 … part_R, patch_1 … patch_L]`` (N = 1 + R + L).  The rules
(the MUVA paper), with ``G[r, l]`` = "patch l belongs to part r":

* CLS attends to every token and every token attends to CLS;
* part token r attends to itself (not to other part tokens) and to the patches with
  ``G[r, l]``;
* a patch attends to every patch and to the part tokens whose mask contains it.

The mask given to :func:`torch.nn.functional.scaled_dot_product_attention` is one
additive tensor ``B×1×N×N`` (broadcast over heads; 0 = may attend, −inf = may not;
with *online* gating the part↔patch entries are soft values in ``[−m, m]``), gathered
from the gate values by a fixed index (:func:`attention_mask_index`).

A :class:`MaskPredictor` sits before every transformer layer: cross-attention with the
part tokens as queries and the patch tokens as keys/values, a residual connection and a
LayerNorm, then an MLP ``D → L → L`` (QuickGELU) giving ``R×L`` logits.  Logits accumulate
across layers (layer k's logits = its output + layer k−1's); the mask is ``sigmoid(logits / τ)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "QuickGELU",
    "MaskPredictor",
    "part_patch_gate",
    "pseudo_gate",
    "attention_mask_index",
    "mask_constants",
    "build_attention_mask",
]

NEG_INF = float("-inf")


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, CLIP's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MaskPredictor(nn.Module):
    """Residual mask predictor of one layer: part→patch cross-attention + MLP to L logits.

    As the reference implementation: the part tokens (queries, layer-normed by ``ln_q``)
    attend to the patch tokens (keys/values, layer-normed by ``ln_kv``) through a
    multi-head cross-attention whose query, key and value projections have **no bias**
    and whose output projection has one; the output plus the (un-normed) part tokens goes
    through ``ln_mlp`` and an MLP ``D → L → L`` (QuickGELU) giving one logit per patch.

    The attention is computed in an algebraically identical but cheaper order: the query
    is pulled back through the key projection (``q·W_k p = (W_kᵀ q)·p``) and the value
    projection is applied after the weighted sum (``Σ a_l W_v p_l = W_v Σ a_l p_l``), so
    the cost is O(R·D²) per sample instead of O(L·D²) and the 12 predictors of ViT-B/16
    add a few percent to a forward pass.

    Initialisation (the reference's): projection and MLP weights trunc-normal (std 0.02),
    MLP biases 0, the output projection's bias PyTorch's default (uniform ±1/√D).

    Args:
        width: token width D of the visual transformer.
        num_patches: L, the number of patch tokens (logits per part).
        heads: attention heads of the cross-attention (must divide ``width``).
        mlp_norm: LayerNorm before the MLP (the reference; ``model.mask_mlp_norm``).
        qv_bias: give the query and value projections a bias (zero-initialised; not the
            reference, ``model.mask_qv_bias``).  A key bias is never used: it adds a
            per-query constant that the softmax cancels, so it could get no gradient.
    """

    def __init__(self, width: int, num_patches: int, heads: int = 8, *, mlp_norm: bool = True, qv_bias: bool = False):
        super().__init__()
        if width % heads:
            raise ValueError(f"mask_heads={heads} does not divide the visual width {width}")
        self.heads = heads
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width, bias=qv_bias)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=qv_bias)
        self.out_proj = nn.Linear(width, width)
        self.ln_mlp = nn.LayerNorm(width) if mlp_norm else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(width, num_patches), QuickGELU(), nn.Linear(num_patches, num_patches))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.mlp[0], self.mlp[2]):
            nn.init.trunc_normal_(lin.weight, std=0.02)
        for lin in (self.q_proj, self.v_proj, self.mlp[0], self.mlp[2]):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        bound = 1.0 / math.sqrt(self.out_proj.in_features)  # nn.Linear's default bias init
        nn.init.uniform_(self.out_proj.bias, -bound, bound)

    def cross_attention(self, parts: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Multi-head cross-attention output B×R×D (before the residual connection)."""
        b, r, d = parts.shape
        h = self.heads
        hd = d // h
        kv = self.ln_kv(patches)  # B×L×D
        q = self.q_proj(self.ln_q(parts)).view(b, r, h, hd)  # B×R×H×hd
        # (W_k^T q) per head: B×H×R×D
        qk = torch.einsum("brhc,hcd->bhrd", q, self.k_proj.weight.view(h, hd, d))
        attn = torch.softmax(qk.reshape(b, h * r, d) @ kv.transpose(1, 2) * hd**-0.5, dim=-1)  # B×(H·R)×L
        ctx = (attn @ kv).view(b, h, r, d)  # weighted sums of the normalised patches
        v = torch.einsum("bhrd,hcd->brhc", ctx, self.v_proj.weight.view(h, hd, d)).reshape(b, r, d)
        if self.v_proj.bias is not None:
            v = v + self.v_proj.bias
        return self.out_proj(v)

    def forward(self, parts: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``parts`` B×R×D, ``patches`` B×L×D → logits B×R×L (this layer's increment)."""
        return self.mlp(self.ln_mlp(parts + self.cross_attention(parts, patches)))


def part_patch_gate(
    logits: torch.Tensor,
    *,
    gating: str = "offline",
    temperature: float = 1.0,
    threshold: float = 0.5,
    margin: float = 5.0,
) -> torch.Tensor:
    """Additive part↔patch values ``B×R×L`` from accumulated mask logits.

    ``offline``: ``sigmoid(logits/τ)`` is detached and thresholded → 0 (in part) or −inf
    (computed as ``logits > τ·logit(threshold)``, the same test without the sigmoid).
    ``online``: the probability is mapped linearly into ``[−m, m]`` (``m·(2p − 1)``) and
    keeps its gradient, so attention trains the predictor.
    """
    if gating == "offline":
        cut = temperature * math.log(threshold / (1.0 - threshold))
        return torch.where(logits.detach() > cut, 0.0, NEG_INF).to(logits.dtype)
    if gating == "online":
        return margin * (2.0 * torch.sigmoid(logits / temperature) - 1.0)
    raise ValueError(f"unknown mask gating {gating!r}; use 'offline' or 'online'")


def pseudo_gate(masks: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive part↔patch values from given masks (bool, or float with 1 = in part)."""
    keep = masks if masks.dtype == torch.bool else masks > 0.5
    return torch.where(keep, 0.0, NEG_INF).to(dtype)


def attention_mask_index(num_parts: int, num_patches: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Where every entry of the ``N×N`` attention mask comes from, as one index (N×N, long).

    The mask is read out of one vector per sample, ``[gate[0, 0] … gate[R−1, L−1], 0, −inf]``
    (the R·L part↔patch values, then the constants 0 and −inf): part row r / patch column l
    and patch row l / part column r point at ``r·L + l``, the part↔part entries off the
    diagonal at the −inf slot, everything else at the 0 slot.  Built once per model, it
    turns the mask into two kernels per layer (a concatenation and one ``index_select``)
    instead of a dozen small ones, and keeps the batch axis free (ONNX ``Gather``).
    """
    r, l = int(num_parts), int(num_patches)
    n = 1 + r + l
    zero, neg = r * l, r * l + 1
    index = torch.full((n, n), zero, dtype=torch.long)
    rows = torch.arange(r)[:, None] * l + torch.arange(l)[None, :]  # R×L positions of gate[r, l]
    index[1 : 1 + r, 1 + r :] = rows
    index[1 + r :, 1 : 1 + r] = rows.t()
    index[1 : 1 + r, 1 : 1 + r] = neg
    index[1 : 1 + r, 1 : 1 + r].fill_diagonal_(zero)
    return index.to(device) if device is not None else index


def mask_constants(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The two constant slots ``[0, −inf]`` that :func:`attention_mask_index` points at."""
    return torch.tensor([0.0, NEG_INF], dtype=dtype, device=device)


def build_attention_mask(
    gate: torch.Tensor,
    dtype: torch.dtype | None = None,
    index: torch.Tensor | None = None,
    consts: torch.Tensor | None = None,
) -> torch.Tensor:
    """The additive attention mask ``B×1×N×N`` for ``[CLS, parts, patches]`` from ``gate`` B×R×L.

    ``gate`` holds the part↔patch additive values (0 / −inf, or soft); it is used for part
    rows → patch columns and, transposed, for patch rows → part columns.  Part tokens
    never see each other; CLS sees and is seen by all.  Every entry is a copy of a gate
    value or a constant, so the mask is exactly the one the rules describe, in ``dtype``
    (default the gate's).

    ``index`` is :func:`attention_mask_index` for the gate's R and L and ``consts``
    :func:`mask_constants`, both made here when not given (the encoder keeps them as
    buffers on its device: no host-to-device copy per layer).
    """
    b, r, l = gate.shape
    n = 1 + r + l
    if index is None:
        index = attention_mask_index(r, l, gate.device)
    gate = gate.to(dtype or gate.dtype)
    if consts is None:
        consts = mask_constants(gate.dtype, gate.device)
    ext = torch.cat([gate.reshape(b, r * l), consts.to(gate.dtype).expand(b, 2)], dim=1)  # B×(R·L+2)
    return ext.index_select(1, index.view(-1)).view(b, 1, n, n)
