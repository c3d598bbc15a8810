"""Multi-grained prompt learner and the CLIP text encoder run on token embeddings.

One prompt per granularity (``global`` + each part), e.g. MUVA's four::

    A photo of a X X X X person
    A photo of a X X X X head of a person
    A photo of a X X X X upper body of a person
    A photo of a X X X X legs of a person

The ``X`` placeholders are replaced by learnable context tokens **per identity and per
granularity** (``ctx``: N_id × G × n_ctx × width).  The fixed words keep CLIP's token
embeddings.  The text encoder is CLIP's (token + position embedding, causal transformer,
``ln_final``, EOT pooling, projection); because attention is causal, the sequence is cut
right after the last EOT token, which gives the same features as the full 77 tokens.
"""

from __future__ import annotations

import logging

import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

__all__ = ["TextEncoder", "PromptLearner", "get_tokenizer", "find_placeholder"]

log = logging.getLogger("muva.models")


def get_tokenizer(backbone: str, context_length: int):
    """open_clip's tokenizer for ``backbone``; falls back to the bundled SimpleTokenizer vocabulary."""
    try:
        return open_clip.get_tokenizer(backbone, context_length=context_length)
    except Exception as exc:  # noqa: BLE001 - e.g. a hub tokenizer offline
        log.warning("open_clip.get_tokenizer(%s) failed (%s); using the bundled SimpleTokenizer", backbone, exc)
        return SimpleTokenizer(context_length=context_length)


def find_placeholder(ids: list[int], token: int, n: int) -> int:
    """Index of the first run of ``n`` consecutive ``token`` ids in ``ids`` (ValueError if none)."""
    for i in range(len(ids) - n + 1):
        if all(ids[i + j] == token for j in range(n)):
            return i
    raise ValueError(f"prompt has no run of {n} placeholder tokens")


class TextEncoder(nn.Module):
    """CLIP's text tower (open_clip modules) that encodes token *embeddings*.

    Holds ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final`` and
    ``text_projection`` taken from an open_clip ``CLIP`` model.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        src = clip.text if hasattr(clip, "text") and clip.text is not None else clip
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection
        mask = src.attn_mask if getattr(src, "attn_mask", None) is not None else clip.attn_mask
        self.register_buffer("attn_mask", mask.clone(), persistent=False)
        self.context_length = int(self.positional_embedding.shape[0])
        self.width = int(self.positional_embedding.shape[1])
        proj = self.text_projection
        self.output_dim = int(proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features)

    def forward(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """``embeddings`` M×T×W (T ≤ context length), ``eot_index`` M → features M×E."""
        t = embeddings.shape[1]
        x = embeddings + self.positional_embedding[:t].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:t, :t].to(x.dtype))
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj.to(x.dtype)

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Plain CLIP text features of token ids M×T (EOT = highest id), for checks and zero-shot use."""
        eot = ids.argmax(dim=-1)
        t = int(eot.max()) + 1
        return self(self.token_embedding(ids[:, :t]), eot)


class PromptLearner(nn.Module):
    """Per-identity, per-granularity learnable context tokens spliced into fixed prompts.

    Args:
        num_classes: number of training identities N.
        templates: one prompt per granularity, the context written as ``n_ctx`` ``X`` words.
        token_embedding: CLIP's token embedding (used for the fixed words; not owned).
        tokenizer: callable ``list[str] → LongTensor`` (open_clip tokenizer).
        n_ctx: learnable tokens per prompt; ``init_std``: their init std.
    """

    def __init__(self, num_classes: int, templates: list[str], token_embedding: nn.Embedding, tokenizer, n_ctx: int = 4, init_std: float = 0.002):
        super().__init__()
        self.num_classes = int(num_classes)
        self.templates = list(templates)
        self.n_ctx = int(n_ctx)
        self._token_embedding = [token_embedding]  # not a submodule: owned by the text encoder
        ids = tokenizer(self.templates).long()
        x_id = int(tokenizer(["X"])[0][1])
        starts = []
        for g, row in enumerate(ids.tolist()):
            try:
                starts.append(find_placeholder(row, x_id, self.n_ctx))
            except ValueError:
                raise ValueError(f"prompt template {self.templates[g]!r} has no '{' '.join(['X'] * self.n_ctx)}' placeholder") from None
        eot = ids.argmax(dim=-1)
        t = int(eot.max()) + 1
        self.register_buffer("token_ids", ids[:, :t].clone(), persistent=False)
        self.register_buffer("eot_index", eot.clone(), persistent=False)
        self.ctx_start = starts
        width = token_embedding.weight.shape[1]
        self.ctx = nn.Parameter(torch.empty(self.num_classes, len(self.templates), self.n_ctx, width))
        nn.init.normal_(self.ctx, std=init_std)

    @property
    def num_granularities(self) -> int:
        return len(self.templates)

    def fixed_embeddings(self) -> torch.Tensor:
        """CLIP embeddings of the template tokens, G×T×W (the X positions hold the 'x' embedding)."""
        emb = self._token_embedding[0]
        return emb(self.token_ids.to(emb.weight.device))

    def forward(self, pids: torch.Tensor) -> torch.Tensor:
        """Identities B → prompt embeddings B×G×T×W with the context tokens spliced in."""
        pids = pids.to(device=self.ctx.device, dtype=torch.long).view(-1)
        if pids.numel() and (int(pids.min()) < 0 or int(pids.max()) >= self.num_classes):
            raise IndexError(f"identity labels must lie in [0, {self.num_classes}), got {int(pids.min())}..{int(pids.max())}")
        fixed = self.fixed_embeddings().to(self.ctx.dtype)
        ctx = self.ctx[pids]  # B×G×n×W
        b = ctx.shape[0]
        rows = []
        for g, s in enumerate(self.ctx_start):
            f = fixed[g].expand(b, -1, -1)
            rows.append(torch.cat([f[:, :s], ctx[:, g], f[:, s + self.n_ctx :]], dim=1))
        return torch.stack(rows, dim=1)
