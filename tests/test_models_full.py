"""The full-size ViT-B/16 MUVA model, built once (random weights): shapes and parameter count."""

from __future__ import annotations

import pytest
import torch

from muva.models import ModelConfig, build_model

pytestmark = pytest.mark.slow

NUM_IDS = 751  # Market-1501 training identities


def predictor_params(width=768, patches=128):
    ln = 3 * 2 * width  # query, key/value and MLP-input LayerNorms
    attn = 4 * width * width + width  # q, k, v, out weights; only the output projection has a bias
    mlp = width * patches + patches + patches * patches + patches
    return ln + attn + mlp


def test_full_vitb16_muva_shapes_and_parameter_count():
    import open_clip

    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="none"), num_classes=NUM_IDS)
    assert model.grid == (16, 8) and model.num_patches == 128 and model.num_layers == 12
    assert model.feature_dim == 4 * 512 and model.embed_dim == 512
    assert model.prompts.ctx.shape == (NUM_IDS, 4, 4, 512)
    assert model.visual.vit.positional_embedding.shape == (1 + 128, 768)
    assert model.visual.mask_predictors[0].heads == 2  # the reference's default (its Market-1501 config)

    clip = open_clip.create_model("ViT-B-16", pretrained=None)  # the plain CLIP ViT-B/16
    clip_params = sum(p.numel() for p in clip.parameters())
    expected = (
        clip_params
        - clip.logit_scale.numel()  # not used
        - (197 - 129) * 768  # position embedding resized from 14×14 to 16×8
        + 3 * 768  # part tokens
        + 3 * 768  # their own position-embedding rows
        + 12 * predictor_params()  # one mask predictor per layer
        + 2 * 2048  # BNNeck weight + (frozen) bias
        + NUM_IDS * 2048  # classifier
        + NUM_IDS * 4 * 4 * 512  # per-identity, per-granularity prompt tokens
    )
    counts = model.count_parameters()
    assert counts["total"] == expected
    assert counts["mask_predictor"] == 12 * predictor_params()
    print(f"\nfull ViT-B/16 MUVA parameters: {counts}")

    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 256, 128)
        out = model(x)
        assert out["logits"].shape == (2, NUM_IDS)
        assert out["bn_features"].shape == (2, 2048)
        assert len(out["mask_logits"]) == 12 and out["mask_logits"][-1].shape == (2, 3, 128)
        assert model.encode_text(torch.tensor([0, 750])).shape == (2, 2048)


def test_full_vitb16_stride12_grid():
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="none", stride=12, parts=[]), num_classes=0)
    assert model.grid == (21, 10) and model.visual.vit.positional_embedding.shape == (211, 768)
    with torch.no_grad():
        assert model.extract(torch.randn(1, 3, 256, 128)).shape == (1, 512)
