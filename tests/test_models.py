"""MUVA model: config, shapes, position embeddings, heads, prompts, baseline equivalence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from muva.config import ConfigError, load_config
from muva.models import MODELS, ModelConfig, build_model, preset_config, tiny_config
from muva.models.vit import resize_pos_embed
from muva.utils.geometry import patch_grid

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(tiny_config(), num_classes=7)


def images(b=2, size=(128, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, *size, generator=g)


# ----------------------------------------------------------------------------- config
def test_tiny_yaml_matches_tiny_config():
    assert load_config(ModelConfig, REPO / "configs/model/tiny.yaml") == tiny_config()


def test_preset_yamls_match_registry():
    assert load_config(ModelConfig, REPO / "configs/model/muva_vitb16.yaml") == MODELS.get("muva")()
    base = load_config(ModelConfig, REPO / "configs/model/clipreid_vitb16.yaml")
    assert base == MODELS.get("clipreid")() and base.parts == []
    assert base.templates() == ["A photo of a X X X X person."]
    assert preset_config("tiny", ["stride=12"]).stride == 12


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="valid parts"):
        load_config(ModelConfig, overrides=["parts=[head,arms]"])
    with pytest.raises(ConfigError, match="did you mean 'mask_heads'"):
        load_config(ModelConfig, overrides=["mask_head=4"])
    with pytest.raises(ConfigError, match="ctx"):
        load_config(ModelConfig, overrides=["global_template=A photo of a person."])
    with pytest.raises(ConfigError, match="offline"):
        load_config(ModelConfig, overrides=["mask_gating=soft"])


def test_muva_templates_default():
    # the reference's prompts have no final period
    assert ModelConfig().templates() == [
        "A photo of a X X X X person",
        "A photo of a X X X X head of a person",
        "A photo of a X X X X upper body of a person",
        "A photo of a X X X X legs of a person",
    ]
    assert "shoes of a person" in ModelConfig(parts=["head", "shoes"]).templates()[2]


def test_prompt_eot_positions_follow_the_written_prompts():
    """[SOS] A photo of a X X X X <words> [EOT]: EOT sits after 1 + 4 + 4 + (1 | 4 | 5 | 4) tokens."""
    from muva.models.prompts import get_tokenizer

    model = build_model(tiny_config(arch=replace(tiny_config().arch, context_length=77)), num_classes=2)
    assert model.prompts.eot_index.tolist() == [10, 13, 14, 13]
    assert model.prompts.ctx_start == [5, 5, 5, 5]
    with_period = [t + "." for t in model.templates]
    ids = get_tokenizer("ViT-B-16", 77)(with_period)
    assert ids.argmax(-1).tolist() == [11, 14, 15, 14]  # what a final period would have given


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("stride,grid", [(16, (8, 4)), (12, (10, 5))])
def test_shapes_at_stride(stride, grid):
    torch.manual_seed(0)
    m = build_model(tiny_config(stride=stride), num_classes=5)
    assert m.grid == grid == patch_grid((128, 64), stride=stride, patch=16)
    assert m.num_patches == grid[0] * grid[1]
    assert m.visual.vit.conv1.stride == (stride, stride)
    assert m.visual.vit.positional_embedding.shape == (1 + m.num_patches, 64)
    out = m(images())
    assert out["logits"].shape == (2, 5)
    assert out["features"].shape == out["bn_features"].shape == (2, 4 * 32) == (2, m.feature_dim)
    assert out["proj_features"] is out["features"]
    assert out["tokens"].shape == (2, 4, 32)
    assert len(out["mask_logits"]) == m.num_layers == 2
    assert all(t.shape == (2, 3, m.num_patches) for t in out["mask_logits"])


def test_full_vitb16_grid_at_stride_12_is_clipreid_like():
    assert patch_grid((256, 128), stride=12, patch=16) == (21, 10)
    assert patch_grid((256, 128), stride=16, patch=16) == (16, 8)


def test_without_part_prompts_the_text_aligns_with_cls_only(tiny):
    torch.manual_seed(0)
    m = build_model(tiny_config(part_prompts=False), num_classes=5)
    assert m.cfg.granularities == ["global"] and m.templates == [m.cfg.templates()[0]] and len(m.templates) == 1
    assert m.prompts.num_granularities == 1
    out = m(images())
    assert out["features"].shape == (2, 4 * 32)  # the part tokens and their masks stay
    assert len(out["mask_logits"]) == m.num_layers
    torch.testing.assert_close(out["proj_features"], out["tokens"][:, 0])
    assert m.text_features().shape == (5, 32) == (5, out["proj_features"].shape[1])


def test_global_baseline_has_no_parts(tiny):
    torch.manual_seed(0)
    m = build_model(tiny_config(parts=[]), num_classes=5)
    out = m(images())
    assert out["mask_logits"] == [] and len(m.visual.mask_predictors) == 0 and m.visual.part_tokens is None
    assert out["features"].shape == (2, 32) and m.feature_dim == 32
    assert m.prompts.num_granularities == 1
    assert m.text_features().shape == (5, 32)
    feats, masks = m.extract(images(), return_masks=True)
    assert masks == [] and feats.shape == (2, 32)


def test_wrong_image_size_is_explained(tiny):
    with pytest.raises(ValueError, match=r"expects \(128, 64\)"):
        tiny(torch.randn(1, 3, 64, 64))


def test_baseline_equals_open_clip_encoder_at_native_grid():
    """R = 0 at the pretrained grid: our forward must equal open_clip's VisionTransformer."""
    torch.manual_seed(0)
    cfg = tiny_config(parts=[], input_size=(64, 64), freeze_patch_embed=False)
    m = build_model(cfg, num_classes=0).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = m.visual(x).tokens[:, 0]
        ref = m.visual.vit(x)  # open_clip's own forward on the same weights
    assert ours.shape == ref.shape == (3, 32)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_part_tokens_start_at_cls_position(tiny):
    vis = tiny.visual
    x = images(1)
    with torch.no_grad():
        seq = vis.embed(x)
        pos = vis.vit.positional_embedding
        manual_part0 = vis.vit.ln_pre(vis.part_tokens[0] + pos[0])
    torch.testing.assert_close(seq[0, 1], manual_part0)


# ----------------------------------------------------------------------------- position embeddings
def test_pos_embed_resize_same_grid_is_identity():
    torch.manual_seed(0)
    pos = torch.randn(1 + 14 * 14, 16)
    torch.testing.assert_close(resize_pos_embed(pos, (14, 14), (14, 14)), pos, rtol=1e-5, atol=1e-5)


def test_pos_embed_resize_changes_grid_and_keeps_structure():
    rows = torch.arange(14.0).repeat_interleave(14)  # value = row index
    pos = torch.cat([torch.full((1, 2), 99.0), torch.stack([rows, torch.ones_like(rows)], 1)])
    out = resize_pos_embed(pos, (14, 14), (16, 8))
    assert out.shape == (1 + 128, 2)
    assert out[0].tolist() == [99.0, 99.0]  # CLS row untouched
    grid = out[1:, 0].reshape(16, 8)
    assert torch.all(grid[1:].mean(1) > grid[:-1].mean(1))  # rows still increase top to bottom
    torch.testing.assert_close(out[1:, 1], torch.ones(128), rtol=1e-4, atol=1e-4)  # constants stay constant
    with pytest.raises(ValueError, match="grid rows"):
        resize_pos_embed(pos, (13, 13), (16, 8))


def test_model_pos_embed_is_resized_from_pretrained_grid():
    torch.manual_seed(0)
    cfg = tiny_config()
    from muva.models.clip_loading import build_clip

    clip, _ = build_clip(cfg)
    pretrained = clip.visual.positional_embedding.detach().clone()  # 4×4 grid (image 64, patch 16)
    from muva.models.muva import MuvaModel

    m = MuvaModel(cfg, clip, 3)
    torch.testing.assert_close(m.visual.vit.positional_embedding.detach(), resize_pos_embed(pretrained, (4, 4), (8, 4)))


# ----------------------------------------------------------------------------- SIE, freezing, heads
def test_sie_camera_embedding_changes_cls_only_input():
    torch.manual_seed(0)
    m = build_model(tiny_config(sie=True, num_cameras=3, sie_coef=2.0), num_classes=4).eval()
    x = images(2)
    with torch.no_grad():
        a = m.visual.embed(x, torch.tensor([0, 0]))
        b = m.visual.embed(x, torch.tensor([1, 2]))
        none = m.visual.embed(x)
    assert not torch.allclose(a[:, 0], b[:, 0])
    torch.testing.assert_close(a[:, 1:], b[:, 1:])
    assert not torch.allclose(none[:, 0], a[:, 0])
    with pytest.raises(ValueError, match="num_cameras"):
        build_model(tiny_config(sie=True), num_classes=4)
    assert build_model(tiny_config(sie=True), num_classes=4, num_cameras=6).visual.cv_embed.shape == (6, 64)


def test_patch_embed_frozen_option():
    assert not build_model(tiny_config()).visual.vit.conv1.weight.requires_grad
    assert build_model(tiny_config(freeze_patch_embed=False)).visual.vit.conv1.weight.requires_grad


def test_heads_bnneck_bias_frozen_classifier_bias_free(tiny):
    assert not tiny.neck.bn.bias.requires_grad and tiny.neck.bn.weight.requires_grad
    assert tiny.classifier.fc.bias is None and tiny.classifier.fc.weight.shape == (7, tiny.feature_dim)
    groups = tiny.parameter_groups()
    assert any(p is tiny.classifier.fc.weight for p in groups["heads"])
    assert groups["mask_predictor"] and len(groups["prompts"]) == 1 and groups["prompts"][0] is tiny.prompts.ctx
    assert sum(len(v) for v in groups.values()) == len(list(tiny.parameters()))


def test_extract_normalised_after_bn_by_default(tiny):
    tiny.train()
    x = images(3)
    f = tiny.extract(x)
    assert tiny.training, "extract must restore the previous mode"
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
    pre = tiny.extract(x, before_bn=True)
    with torch.no_grad():
        tiny.eval()
        raw = tiny(x)
    torch.testing.assert_close(pre, torch.nn.functional.normalize(raw["features"], dim=1))
    torch.testing.assert_close(f, torch.nn.functional.normalize(raw["bn_features"], dim=1))
    f2, masks = tiny.extract(x, return_masks=True)
    assert len(masks) == 2 and masks[0].shape == (3, 3, 32)
    assert float(masks[0].min()) >= 0.0 and float(masks[0].max()) <= 1.0
    torch.testing.assert_close(masks[1], torch.sigmoid(raw["mask_logits"][1]))


def test_inference_only_model_has_no_text_side():
    m = build_model(tiny_config(), num_classes=None)
    assert m.prompts is None and m.classifier is None
    assert m(images())["logits"] is None
    with pytest.raises(RuntimeError, match="num_classes"):
        m.encode_text(torch.tensor([0]))


# ----------------------------------------------------------------------------- light import, CLI
def test_config_import_is_light():
    import subprocess
    import sys

    code = "import sys, muva.models, muva.models.commands; print(any(m.startswith(('torch', 'open_clip')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_cli_model_info():
    from typer.testing import CliRunner

    from muva.cli import app

    res = CliRunner().invoke(app, ["model", "info", "--preset", "tiny", "--classes", "3", "stride=12"])
    assert res.exit_code == 0, res.output
    assert "(10, 5) = 50 patches" in res.output and "head, upper_body, legs" in res.output
    bad = CliRunner().invoke(app, ["model", "info", "--preset", "tiny", "mask_gate=online"])
    assert bad.exit_code == 2 and "mask_gating" in bad.output


@pytest.mark.parametrize("backbone,patch,grid", [("ViT-B/32", 32, (4, 2)), ("ViT-L-14", 14, (9, 4))])
def test_other_backbones_resolve_with_their_patch_size(backbone, patch, grid):
    """ViT-B/32 and ViT-L/14 names resolve through open_clip (tiny widths keep the test fast)."""
    cfg = tiny_config(backbone=backbone, stride=None)
    cfg.arch.patch_size = None
    cfg.arch.image_size = None
    torch.manual_seed(0)
    m = build_model(cfg, num_classes=2)
    assert m.patch_size == patch == m.stride and m.grid == grid
    assert m(images())["mask_logits"][0].shape == (2, 3, grid[0] * grid[1])


def test_unknown_backbone_is_explained():
    with pytest.raises(ValueError, match="unknown backbone 'ViT-X-99'.*ViT-B-16"):
        build_model(tiny_config(backbone="ViT-X-99"))
