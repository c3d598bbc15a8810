"""Each loss against a value computed by hand (small numbers, explicit formulas)."""

import math

import pytest
import torch

from muva.losses import (LOSSES, ClusterMemory, LabelSmoothingCE, MaskLoss, PromptCentroidLoss, SupConLoss,
                         batch_hard_triplet, dice_loss, image_to_text_ce, label_smoothed_ce)


def test_label_smoothed_ce_hand_value():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    z = math.log(math.exp(2) + 1 + math.exp(-1))
    logp = [2 - z, 0 - z, -1 - z]
    eps = 0.1
    expected = -((1 - eps) * logp[0] + eps / 3 * sum(logp))
    got = label_smoothed_ce(logits, torch.tensor([0]), eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # epsilon 0 is plain cross-entropy
    assert label_smoothed_ce(logits, torch.tensor([2]), 0.0).item() == pytest.approx(-logp[2], rel=1e-6)


def test_label_smoothing_module_list_is_mean():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    mod = LabelSmoothingCE(0.1)
    assert mod([a, b], y).item() == pytest.approx((mod(a, y).item() + mod(b, y).item()) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        LabelSmoothingCE(1.5)


def test_i2t_ce_is_smoothed_ce_of_dot_products():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    txt = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    y = torch.tensor([0, 1])
    logits = torch.tensor([[1.0, 0.0, -1.0], [2.0, 2.0, 0.0]])
    assert image_to_text_ce(img, txt, y).item() == pytest.approx(label_smoothed_ce(logits, y).item(), rel=1e-6)


def test_prompt_loss_normalises_and_uses_temperature():
    text = torch.tensor([[3.0, 0.0]])
    cents = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    # normalised: t = (1,0); c = (1,0),(0,1) -> logits (1, 0)/T
    T = 0.5
    expected = -(2.0 - math.log(math.exp(2.0) + 1.0))
    assert PromptCentroidLoss(T)(text, cents, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_supcon_hand_value():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    one = -(1.0 - math.log(math.e + 1.0))  # each anchor: positive logit 1, negative 0
    assert SupConLoss(symmetric=False)(img, txt, y).item() == pytest.approx(one, rel=1e-6)
    assert SupConLoss(symmetric=True)(img, txt, y).item() == pytest.approx(2 * one, rel=1e-6)
    # two positives: mean of their log-probabilities
    y2 = torch.tensor([0, 0])
    assert SupConLoss(symmetric=False)(img, txt, y2).item() == pytest.approx(
        -0.5 * ((1 - math.log(math.e + 1)) + (0 - math.log(math.e + 1))) , rel=1e-6)


def test_batch_hard_triplet_hand_value():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor0: d_ap=1, d_an=3 -> relu(1-3+0.3)=0; anchor1: ap 1, an 2 -> 0; anchor2: ap 4, an 2 -> 2.3; anchor3: ap 4, an 6 -> 0
    assert batch_hard_triplet(x, y, margin=0.3).item() == pytest.approx(2.3 / 4, rel=1e-5)
    soft = [math.log1p(math.exp(1 - 3)), math.log1p(math.exp(1 - 2)), math.log1p(math.exp(4 - 2)), math.log1p(math.exp(4 - 6))]
    assert batch_hard_triplet(x, y, margin=None).item() == pytest.approx(sum(soft) / 4, rel=1e-5)
    assert batch_hard_triplet(x, torch.zeros(4, dtype=torch.long)).item() == 0.0


def test_dice_and_mask_loss_hand_value():
    p = torch.tensor([[[0.5, 0.5, 0.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]])
    # inter 1.5, sums 2 and 2: 1 - (3 + s)/(4 + s), s = 1e-3 (the reference's 1e-6 on sums / 1000)
    assert dice_loss(p, t).item() == pytest.approx(1 - 3.001 / 4.001, rel=1e-6)
    assert dice_loss(p, t, smooth=1.0).item() == pytest.approx(0.2, rel=1e-6)
    # an empty target row: (0 + s) / (Σp + s)
    assert dice_loss(p, torch.zeros_like(t)).item() == pytest.approx(1 - 1e-3 / 2.001, rel=1e-6)
    logits = torch.tensor([[[0.0, 2.0]]])
    target = torch.tensor([[[1.0, 0.0]]])
    bce = (math.log(2) + (2 + math.log1p(math.exp(-2)))) / 2
    s = [0.5, 1 / (1 + math.exp(-2))]
    dice = 1 - (2 * s[0] + 1e-3) / (sum(s) + 1 + 1e-3)
    one = bce + dice
    got = MaskLoss()([logits, logits * 0 + torch.tensor([[[0.0, 2.0]]])], target)
    assert got.item() == pytest.approx(one, rel=1e-5)
    assert MaskLoss(dice_weight=0)([logits], target).item() == pytest.approx(bce, rel=1e-5)
    parts = MaskLoss().components([logits], target)
    assert parts["bce"].item() == pytest.approx(bce, rel=1e-6) and parts["dice"].item() == pytest.approx(dice, rel=1e-6)
    with pytest.raises(ValueError):
        MaskLoss()([torch.zeros(1, 2, 3)], torch.zeros(1, 2, 4))
    with pytest.raises(ValueError):
        MaskLoss()([], target)


def test_mask_temperature_scales_the_dice_probabilities_not_the_bce():
    """The reference: BCE on the raw accumulated logits, Dice on sigmoid(logits / τ) (the gate's probabilities)."""
    logits = torch.tensor([[[1.0, -3.0, 0.5]]])
    target = torch.tensor([[[1.0, 0.0, 0.0]]])
    tau = 2.0
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
    p = [1 / (1 + math.exp(-v / tau)) for v in (1.0, -3.0, 0.5)]
    dice = 1 - (2 * p[0] + 1e-3) / (sum(p) + 1 + 1e-3)
    c = MaskLoss(tau=tau).components([logits], target)
    assert c["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert c["dice"].item() == pytest.approx(dice, rel=1e-6)
    assert c["dice"].item() != pytest.approx(MaskLoss(tau=1.0).components([logits], target)["dice"].item(), rel=1e-3)
    with pytest.raises(ValueError, match="tau"):
        MaskLoss(tau=0.0)


def test_mask_loss_mean_over_layers():
    t = (torch.rand(2, 3, 8) > 0.5).float()
    a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    m = MaskLoss()
    assert m([a, b], t).item() == pytest.approx((m([a], t).item() + m([b], t).item()) / 2, rel=1e-6)


def test_cluster_memory_rebuild_loss_and_hard_update():
    mem = ClusterMemory(2, 2, temperature=0.5, momentum=0.2, mode="hard")
    with pytest.raises(RuntimeError):
        mem(torch.randn(2, 2), torch.tensor([0, 1]))
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    mem.rebuild(feats, torch.tensor([0, 0, 1]))
    assert torch.allclose(mem.memory, torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # both of identity 0; the second is the hardest
    y = torch.tensor([0, 0])
    loss = mem(x, y)
    # logits row0 = (1, 0)/0.5, row1 = (0.6, 0.8)/0.5
    l0 = -(2.0 - math.log(math.exp(2.0) + math.exp(0.0)))
    l1 = -(1.2 - math.log(math.exp(1.2) + math.exp(1.6)))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    new = torch.tensor([0.2 + 0.8 * 0.6, 0.8 * 0.8])
    new = new / new.norm()
    assert torch.allclose(mem.memory[0], new, atol=1e-6)
    assert torch.allclose(mem.memory[1], torch.tensor([0.0, 1.0]))  # untouched identity


def test_cluster_memory_mean_mode_and_gradient():
    mem = ClusterMemory(2, 2, temperature=1.0, momentum=0.5, mode="mean")
    mem.rebuild(torch.eye(2), torch.tensor([0, 1]))
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    loss = mem(x, torch.tensor([1, 1]))
    loss.backward()  # memory replaced, not modified in place: backward works
    assert x.grad is not None and torch.isfinite(x.grad).all()
    m = torch.tensor([0.0, 0.5]) + 0.5 * (torch.tensor([0.0, 1.0]) + torch.tensor([1.0, 1.0]) / 2 ** 0.5) / 2
    assert torch.allclose(mem.memory[1], m / m.norm(), atol=1e-6)
    with pytest.raises(ValueError):
        mem.rebuild(torch.eye(2)[:1], torch.tensor([0]))  # identity 1 without features


def test_registry_names():
    assert set(LOSSES.names()) >= {"id", "imp", "i2t", "mask", "triplet"}
    assert LOSSES.canonical("cluster_memory") == "imp"
