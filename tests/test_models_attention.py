"""AM-MSA: attention rules, mask predictors, gating and gradients."""

from __future__ import annotations

import pytest
import torch

from muva.models import build_model, tiny_config
from muva.models.masking import MaskPredictor, build_attention_mask, part_patch_gate, pseudo_gate
from muva.models.vit import MuvaVisionEncoder

R, L = 3, 32


def part_masks(seed=0, b=1):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, R, L, generator=g) > 0.5
    m[:, :, 0] = True  # never empty
    m[:, 0, 5] = False  # a known patch outside part 0
    m[:, 0, 6] = True  # a known patch inside part 0
    return m


@pytest.fixture(scope="module")
def one_layer():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.arch.vision_layers = 1
    return build_model(cfg, num_classes=3).eval()


def bump():
    """A random perturbation (a constant shift would vanish in LayerNorm)."""
    return 3.0 * torch.randn(64, generator=torch.Generator().manual_seed(9))


def run_block(model, x, gate):
    blk = model.visual.vit.transformer.resblocks[0]
    with torch.no_grad():
        return MuvaVisionEncoder.block(blk, x, build_attention_mask(gate))


def test_mask_tensor_layout_and_broadcast_shape():
    g = part_masks(b=2)
    mask = build_attention_mask(pseudo_gate(g))
    n = 1 + R + L
    assert mask.shape == (2, 1, n, n)  # one tensor broadcast over heads, no per-head copies
    allowed = mask[:, 0] == 0
    assert allowed[:, 0].all() and allowed[:, :, 0].all()  # CLS row and column
    assert allowed[:, 1 + R :, 1 + R :].all()  # patch ↔ patch
    eye = torch.eye(R, dtype=torch.bool)
    assert torch.equal(allowed[:, 1 : 1 + R, 1 : 1 + R], eye.expand(2, R, R))  # parts see only themselves
    assert torch.equal(allowed[:, 1 : 1 + R, 1 + R :], g)  # part → its patches
    assert torch.equal(allowed[:, 1 + R :, 1 : 1 + R], g.transpose(1, 2))  # patch → parts containing it
    assert torch.isinf(mask[~(mask == 0)]).all()


def test_part_token_ignores_patches_outside_its_mask(one_layer):
    torch.manual_seed(1)
    x = torch.randn(1, 1 + R + L, 64)
    g = part_masks()
    gate = pseudo_gate(g)
    base = run_block(one_layer, x, gate)
    outside = x.clone()
    outside[0, 1 + R + 5] += bump()  # patch 5 is not in part 0
    y = run_block(one_layer, outside, gate)
    torch.testing.assert_close(y[0, 1], base[0, 1])  # part 0 unchanged
    assert not torch.allclose(y[0, 0], base[0, 0])  # CLS sees everything
    assert not torch.allclose(y[0, 1 + R + 20], base[0, 1 + R + 20])  # every patch sees every patch
    inside = x.clone()
    inside[0, 1 + R + 6] += bump()  # patch 6 is in part 0
    assert not torch.allclose(run_block(one_layer, inside, gate)[0, 1], base[0, 1])


def test_parts_do_not_see_each_other_and_patches_see_only_their_parts(one_layer):
    torch.manual_seed(2)
    x = torch.randn(1, 1 + R + L, 64)
    g = part_masks()
    base = run_block(one_layer, x, pseudo_gate(g))
    y = x.clone()
    y[0, 1 + 1] += bump()  # perturb part token 1
    out = run_block(one_layer, y, pseudo_gate(g))
    torch.testing.assert_close(out[0, 1], base[0, 1])  # part 0 does not attend to part 1
    torch.testing.assert_close(out[0, 3], base[0, 3])  # nor does part 2
    for l in range(L):
        same = torch.allclose(out[0, 1 + R + l], base[0, 1 + R + l])
        assert same == (not bool(g[0, 1, l])), f"patch {l}: sees part 1 iff it is in part 1's mask"
    assert not torch.allclose(out[0, 0], base[0, 0])  # CLS sees part 1


def test_end_to_end_pixels_outside_part_do_not_reach_part_feature(one_layer):
    """Through the whole 1-layer model with pseudo masks: change the pixels of a patch outside part 0."""
    g = part_masks()
    x = torch.randn(1, 3, 128, 64, generator=torch.Generator().manual_seed(3))
    row, col = divmod(5, 4)  # patch 5 of the 8×4 grid
    x2 = x.clone()
    x2[..., row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] += 1.0
    with torch.no_grad():
        a = one_layer.visual(x, pseudo_masks=g).tokens
        b = one_layer.visual(x2, pseudo_masks=g).tokens
    torch.testing.assert_close(a[0, 1], b[0, 1])  # part 0 (projected) unchanged
    assert not torch.allclose(a[0, 0], b[0, 0])  # CLS changed


def test_predicted_offline_masks_drive_attention(one_layer):
    """Predicted masks (made input-independent) give the same attention as the same pseudo masks."""
    import copy

    m = copy.deepcopy(one_layer)
    g = part_masks()
    last = m.visual.mask_predictors[0].mlp[2]
    with torch.no_grad():  # zero weights: logits = bias, the same per-patch pattern for every part
        last.weight.zero_()
        last.bias.copy_(torch.where(g[0, 0], 4.0, -4.0))
    same_for_all = g[0, 0].expand(1, R, L)
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        pred = m.visual(x)
        forced = m.visual(x, pseudo_masks=same_for_all.expand(2, R, L))
    torch.testing.assert_close(pred.tokens, forced.tokens)
    assert torch.equal(pred.mask_logits[0] > 0, same_for_all.expand(2, R, L))


def test_logits_accumulate_across_layers():
    torch.manual_seed(0)
    m = build_model(tiny_config(), num_classes=2).eval()
    incs = []
    hooks = [p.register_forward_hook(lambda mod, inp, out: incs.append(out)) for p in m.visual.mask_predictors]
    with torch.no_grad():
        out = m.visual(torch.randn(2, 3, 128, 64))
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out.mask_logits[0], incs[0])
    torch.testing.assert_close(out.mask_logits[1], incs[0] + incs[1])


def test_gating_offline_and_online():
    logits = torch.tensor([[[-3.0, -0.1, 0.1, 3.0]]], requires_grad=True)
    off = part_patch_gate(logits, gating="offline")
    assert torch.equal(torch.isinf(off), torch.tensor([[[True, True, False, False]]])) and not off.requires_grad
    hot = part_patch_gate(logits, gating="offline", temperature=0.01, threshold=0.9)
    assert torch.equal(torch.isinf(hot), torch.tensor([[[True, True, False, False]]]))
    on = part_patch_gate(logits, gating="online", margin=2.0)
    assert on.requires_grad and float(on.detach().abs().max()) <= 2.0
    torch.testing.assert_close(on, 2.0 * (2 * torch.sigmoid(logits) - 1))
    with pytest.raises(ValueError, match="gating"):
        part_patch_gate(logits, gating="hard")


def test_online_mask_is_soft_and_differentiable():
    g = torch.zeros(1, R, L, requires_grad=True)
    mask = build_attention_mask(g)
    assert mask.requires_grad and torch.isinf(mask[0, 0, 1, 2])  # part↔part stays hard


def _grad_norm(module):
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return sum(float(g.abs().sum()) for g in grads)


@pytest.mark.parametrize("gating", ["offline", "online"])
def test_gradient_paths_to_mask_predictor(gating):
    torch.manual_seed(0)
    m = build_model(tiny_config(mask_gating=gating), num_classes=4).train()
    x = torch.randn(4, 3, 128, 64)
    # 1) a loss on the features only: reaches the predictors only through attention (online)
    out = m(x)
    out["features"].pow(2).sum().backward()
    via_attention = _grad_norm(m.visual.mask_predictors[0])
    if gating == "offline":
        assert via_attention == 0.0, "offline masks are detached: no gradient through attention"
    else:
        assert via_attention > 0.0, "online masks must pass gradient through attention"
    # 2) a loss on the mask logits reaches every predictor (offline's only path)
    m.zero_grad(set_to_none=True)
    out = m(x)
    sum(l.sigmoid().mean() for l in out["mask_logits"]).backward()
    for pred in m.visual.mask_predictors:
        assert _grad_norm(pred) > 0.0


def test_pseudo_mask_shape_is_checked(one_layer):
    with pytest.raises(ValueError, match=r"B×3×32"):
        one_layer.visual(torch.randn(1, 3, 128, 64), pseudo_masks=torch.ones(1, 3, 16, dtype=torch.bool))


@pytest.mark.parametrize("qv_bias", [False, True])
def test_mask_predictor_equals_standard_cross_attention(qv_bias):
    torch.manual_seed(0)
    p = MaskPredictor(64, 10, heads=4, qv_bias=qv_bias)
    assert p.k_proj.bias is None
    zero = torch.zeros(64)
    if qv_bias:
        for lin in (p.v_proj, p.q_proj):
            torch.nn.init.normal_(lin.bias, std=0.5)
    key_bias = torch.randn(64) * 0.5  # any key bias: the softmax cancels it
    parts, patches = torch.randn(2, 3, 64), torch.randn(2, 10, 64)
    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([p.q_proj.weight, p.k_proj.weight, p.v_proj.weight]))
        qb = p.q_proj.bias if qv_bias else zero
        vb = p.v_proj.bias if qv_bias else zero
        mha.in_proj_bias.copy_(torch.cat([qb, key_bias, vb]))
        mha.out_proj.weight.copy_(p.out_proj.weight)
        mha.out_proj.bias.copy_(p.out_proj.bias)
        kv = p.ln_kv(patches)
        ref = mha(p.ln_q(parts), kv, kv, need_weights=False)[0]
        torch.testing.assert_close(p.cross_attention(parts, patches), ref, rtol=1e-5, atol=1e-5)
        # the MLP reads LayerNorm(parts + attention), as the reference's ln_mlp
        want = p.mlp(torch.nn.functional.layer_norm(parts + ref, (64,), p.ln_mlp.weight, p.ln_mlp.bias))
        torch.testing.assert_close(p(parts, patches), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not divide"):
        MaskPredictor(64, 10, heads=5)


def test_mask_predictor_parameters_and_init_follow_the_reference():
    """No q/k/v biases, an output bias with nn.Linear's default init, LayerNorm before the MLP."""
    torch.manual_seed(0)
    p = MaskPredictor(768, 128, heads=2)
    names = [n for n, _ in p.named_parameters()]
    assert names == ["ln_q.weight", "ln_q.bias", "ln_kv.weight", "ln_kv.bias", "q_proj.weight", "k_proj.weight",
                     "v_proj.weight", "out_proj.weight", "out_proj.bias", "ln_mlp.weight", "ln_mlp.bias",
                     "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    bound = 768 ** -0.5
    b = p.out_proj.bias.detach()
    assert float(b.abs().max()) <= bound and float(b.std()) > 0.4 * bound  # uniform(±1/√D), not zeros
    assert float(p.mlp[0].bias.abs().max()) == 0.0 and float(p.mlp[2].bias.abs().max()) == 0.0
    for w in (p.q_proj.weight, p.k_proj.weight, p.v_proj.weight, p.out_proj.weight, p.mlp[0].weight):
        assert abs(float(w.detach().std()) - 0.02) < 0.003  # nn.init.trunc_normal_(std=0.02), as the reference
    legacy = MaskPredictor(64, 10, heads=2, mlp_norm=False, qv_bias=True)
    assert isinstance(legacy.ln_mlp, torch.nn.Identity) and legacy.q_proj.bias is not None and legacy.v_proj.bias is not None


def test_sdpa_gets_one_broadcast_mask_per_layer(monkeypatch):
    """Every block calls scaled_dot_product_attention with one B×1×N×N mask (None for the baseline).

    The last block asks only for the [CLS, parts] queries (nothing reads its patch outputs).
    """
    import torch.nn.functional as F

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        if q.shape[-1] == 32:  # the ViT blocks (head width 32), not the predictors
            seen.append((tuple(q.shape), None if attn_mask is None else tuple(attn_mask.shape)))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    n = 1 + R + L
    build_model(tiny_config(), num_classes=2).eval()(torch.randn(2, 3, 128, 64))
    assert seen == [((2, 2, n, 32), (2, 1, n, n)), ((2, 2, 1 + R, 32), (2, 1, 1 + R, n))]
    seen.clear()
    build_model(tiny_config(parts=[]), num_classes=2).eval()(torch.randn(2, 3, 128, 64))
    assert seen == [((2, 2, 1 + L, 32), None), ((2, 2, 1, 32), None)]


@pytest.mark.parametrize("parts", [None, []])
def test_last_block_query_pruning_changes_nothing(parts, monkeypatch):
    """Computing only [CLS, parts] in the last block gives the same tokens and gradients as the full block."""
    from muva.models.vit import MuvaVisionEncoder

    torch.manual_seed(0)
    kw = {} if parts is None else {"parts": parts}
    model = build_model(tiny_config(**kw), num_classes=2)
    model.train()
    x = torch.randn(3, 3, 128, 64)
    out = model(x)
    out["features"].square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    full_block = MuvaVisionEncoder.block
    monkeypatch.setattr(MuvaVisionEncoder, "block", staticmethod(lambda blk, x, mask, queries=None: full_block(blk, x, mask)))
    ref = model(x)
    ref["features"].square().sum().backward()
    torch.testing.assert_close(out["features"], ref["features"], rtol=1e-5, atol=1e-6)
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)

