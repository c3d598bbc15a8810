"""Multi-grained prompt learner and the text encoder."""

from __future__ import annotations

import pytest
import torch

from muva.models import MODELS, build_model, tiny_config
from muva.models.prompts import find_placeholder, get_tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config(), num_classes=7)


def test_tokenizer_works_offline_and_finds_placeholders():
    tok = get_tokenizer("ViT-B-16", 77)
    ids = tok(["A photo of a X X X X person."])[0].tolist()
    x = int(tok(["X"])[0][1])
    assert ids[0] == 49406 and 49407 in ids  # SOT / EOT of CLIP's BPE vocabulary
    assert find_placeholder(ids, x, 4) == 5  # SOT + "a photo of a"
    with pytest.raises(ValueError):
        find_placeholder(ids, x, 5)


def test_prompt_shapes_and_init(model):
    p = model.prompts
    assert p.ctx.shape == (7, 4, 4, 32)  # identities × (1+R) × n_ctx × width
    assert 0.0005 < float(p.ctx.detach().std()) < 0.005  # init std 0.002
    assert p.num_granularities == 4 and p.ctx_start == [5, 5, 5, 5]
    assert p.token_ids.shape[1] == int(p.eot_index.max()) + 1  # cut after the last EOT


def test_splicing_keeps_fixed_word_embeddings(model):
    p = model.prompts
    pids = torch.tensor([3, 0, 3])
    emb = p(pids)
    fixed = model.text.token_embedding(p.token_ids)
    assert emb.shape == (3, 4, p.token_ids.shape[1], 32)
    for g, s in enumerate(p.ctx_start):
        ctx_pos = torch.zeros(p.token_ids.shape[1], dtype=torch.bool)
        ctx_pos[s : s + 4] = True
        for i, pid in enumerate(pids.tolist()):
            torch.testing.assert_close(emb[i, g, ~ctx_pos], fixed[g, ~ctx_pos])  # fixed words untouched
            torch.testing.assert_close(emb[i, g, ctx_pos], p.ctx[pid, g])  # X X X X → the identity's tokens
    assert not torch.equal(emb[0, 0, 5:9], emb[1, 0, 5:9])  # different identities differ


def test_gradient_reaches_only_the_prompt_tokens(model):
    model.zero_grad(set_to_none=True)
    feats = model.encode_text(torch.tensor([1, 2]))
    assert feats.shape == (2, 4 * 32)
    feats.pow(2).sum().backward()
    g = model.prompts.ctx.grad
    assert g is not None
    assert g[[1, 2]].abs().sum() > 0 and g[[0, 3, 4, 5, 6]].abs().sum() == 0
    assert all(p.grad is None for p in model.text.parameters())  # CLIP's text tower is frozen
    model.zero_grad(set_to_none=True)


def test_truncated_sequence_equals_full_context(model):
    """Cutting the sequence after EOT must not change the causal text encoder's output."""
    p = model.prompts
    with torch.no_grad():
        short = model.text(p(torch.tensor([4]))[0], p.eot_index)
        full_ids = torch.zeros(4, model.text.context_length, dtype=torch.long)
        full_ids[:, : p.token_ids.shape[1]] = p.token_ids
        emb = model.text.token_embedding(full_ids)
        for g, s in enumerate(p.ctx_start):
            emb[g, s : s + 4] = p.ctx[4, g]
        full = model.text(emb, p.eot_index)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)


def test_encode_ids_matches_open_clip_encode_text():
    from muva.models.clip_loading import build_clip
    from muva.models.prompts import TextEncoder

    torch.manual_seed(0)
    clip, _ = build_clip(tiny_config())
    enc = TextEncoder(clip)
    ids = get_tokenizer("ViT-B-16", 32)(["a photo of a person.", "legs"])
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_ids(ids), clip.encode_text(ids), rtol=1e-5, atol=1e-5)


def test_text_features_in_chunks_equal_one_pass(model):
    with torch.no_grad():
        one = model.encode_text(torch.arange(7))
    chunked = model.text_features(chunk_size=3, progress=False)
    assert chunked.shape == (7, model.feature_dim)
    torch.testing.assert_close(chunked, one, rtol=1e-5, atol=1e-5)
    assert not chunked.requires_grad


def test_many_identities_chunked():
    torch.manual_seed(0)
    m = build_model(tiny_config(n_ctx=2), num_classes=2000)
    feats = m.text_features(chunk_size=512, progress=False)
    assert feats.shape == (2000, m.feature_dim) and torch.isfinite(feats).all()
    with pytest.raises(IndexError, match=r"\[0, 2000\)"):
        m.encode_text(torch.tensor([2000]))


def test_custom_templates_and_baseline_template():
    m = build_model(tiny_config(parts=[], global_template="a {ctx} pedestrian."), num_classes=2)
    assert m.templates == ["a X X X X pedestrian."]
    assert m.prompts.ctx_start == [2]
    b = build_model(tiny_config(parts=[]), num_classes=2)
    assert b.templates == ["A photo of a X X X X person"]  # the global model keeps MUVA's global prompt
    assert MODELS.get("clipreid")().templates() == ["A photo of a X X X X person."]  # CLIP-ReID's prompt
