"""Stage-2 loss terms as plugins: the registry, the term contract, weights by name, old checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from muva.engine.config import DEFAULT_LOSS_WEIGHTS, Stage2Config
from muva.engine.stage2 import Stage2Losses
from muva.losses import (LOSSES, ClusterMemory, LabelSmoothingCE, LossConfigError, LossContext, LossTerm, MaskLoss,
                         TripletLoss, image_to_text_ce, label_smoothed_ce, register_loss, resolve_weights)

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = ["id", "imp", "i2t", "mask", "triplet"]
C, D, R, L = 4, 6, 3, 8  # identities, feature size, parts, patches


def fake_batch(seed: int = 0, b: int = 8) -> tuple[dict, dict]:
    """A model output and a loader batch of the shapes stage 2 sees (two layers of mask logits)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, D, generator=g, requires_grad=True)
    out = {"logits": torch.randn(b, C, generator=g), "features": feats, "proj_features": feats,
           "bn_features": torch.randn(b, D, generator=g), "tokens": torch.randn(b, 1 + R, D, generator=g),
           "mask_logits": [torch.randn(b, R, L, generator=g) for _ in range(2)]}
    batch = {"pid": torch.arange(b) % C, "camid": torch.zeros(b, dtype=torch.long), "index": torch.arange(b),
             "mask": torch.rand(b, R, L, generator=g) > 0.5}
    return out, batch


def memory_init(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * C, D, generator=g), torch.arange(C).repeat(2)


def text_prototypes() -> torch.Tensor:
    return torch.randn(C, D, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def plugin_term():
    """A registered plugin term ("test-center"), removed from the registry afterwards."""

    @register_loss("test-center", aliases=("test-centre",))
    class CenterTerm(LossTerm):
        def forward(self, out, batch):
            x = out["features"]
            return (x - x.mean(0)).pow(2).sum(1).mean()

    yield CenterTerm
    LOSSES._items.pop("test-center", None)
    LOSSES._aliases.pop("test-centre", None)


# ----------------------------------------------------------------------------- registry and contract
def test_registry_holds_the_five_built_in_terms():
    assert set(BUILT_IN) <= set(LOSSES.names())
    for name in BUILT_IN:
        cls = LOSSES.get(name)
        assert issubclass(cls, LossTerm) and cls.name == name
    assert LOSSES.canonical("cluster_memory") == "imp"
    assert (LOSSES.get("mask").needs_parts, LOSSES.get("mask").needs_pseudo_masks) == (True, True)
    assert LOSSES.get("i2t").needs_text and not LOSSES.get("id").needs_text
    assert LOSSES.get("imp").needs_epoch_features and not LOSSES.get("triplet").needs_epoch_features
    assert list(DEFAULT_LOSS_WEIGHTS) == BUILT_IN


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_term_builds_and_gives_a_finite_scalar(name):
    cls = LOSSES.get(name)
    ctx = LossContext(Stage2Config(), C, D, text_prototypes() if cls.needs_text else None, 1.0, True)
    term = cls.build(ctx)
    assert isinstance(term, LossTerm)
    if cls.needs_epoch_features:
        term.rebuild(*memory_init())
    out, batch = fake_batch()
    loss = term(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() >= 0.0


def test_register_loss_refuses_what_is_not_a_term():
    with pytest.raises(TypeError, match="LossTerm subclass"):
        register_loss("not-a-term")(torch.nn.Module)
    with pytest.raises(ValueError, match="lower-case letters"):
        register_loss("a.b")(type("Dotted", (LossTerm,), {}))
    with pytest.raises(KeyError, match="already registered"):
        register_loss("id")(type("Again", (LossTerm,), {}))
    assert "not-a-term" not in LOSSES and "a.b" not in LOSSES


# ----------------------------------------------------------------------------- the objective
def test_total_equals_the_loss_functions_for_a_fixed_batch():
    """Each weighted term and the total are exactly what the loss functions give, as before terms."""
    weights = {"id": 0.25, "imp": 0.5, "i2t": 1.0, "mask": 2.0, "triplet": 1.5}
    cfg = Stage2Config(weights=weights, label_smoothing=0.2, triplet_margin=0.4, mask_dice_weight=0.5)
    text = text_prototypes()
    losses = Stage2Losses(cfg, C, D, text, True, mask_temperature=2.0)
    feats, labels = memory_init()
    losses.terms["imp"].memory.rebuild(feats, labels)
    reference_memory = ClusterMemory(D, C, cfg.memory_temperature, cfg.memory_momentum, cfg.memory_mode)
    reference_memory.rebuild(feats, labels)
    out, batch = fake_batch(3)
    y = batch["pid"]

    got = losses(out, batch)
    expected = {
        "id": 0.25 * label_smoothed_ce(out["logits"], y, 0.2),
        "imp": 0.5 * reference_memory(out["bn_features"], y),
        "i2t": 1.0 * image_to_text_ce(out["proj_features"], text, y, 0.2),
        "mask": 2.0 * MaskLoss(1.0, 0.5, 2.0, cfg.mask_dice_smooth)(out["mask_logits"], batch["mask"]),
        "triplet": 1.5 * TripletLoss(0.4)(out["features"], y),
    }
    assert list(got) == BUILT_IN
    for name in BUILT_IN:
        assert torch.equal(got[name], expected[name]), name
    assert torch.equal(sum(got.values()), sum(expected.values()))
    assert torch.equal(losses.terms["imp"].memory.memory, reference_memory.memory)  # the momentum update ran once
    assert LabelSmoothingCE(0.2)(out["logits"], y).item() == pytest.approx(got["id"].item() / 0.25)


def test_zero_weight_switches_a_term_off_and_parts_decide_the_mask_term():
    losses = Stage2Losses(Stage2Config(weights={"imp": 0.0}), C, D, text_prototypes(), has_parts=False)
    assert list(losses.terms) == ["id", "i2t"]  # imp off, mask left out without parts, triplet 0
    out, batch = fake_batch()
    assert set(losses(out, batch)) == {"id", "i2t"}
    assert losses.state_dict() == {}
    with pytest.raises(KeyError, match="imp"):
        losses.terms["imp"]  # noqa: B018


def test_plugin_term_is_weighted_like_a_built_in(plugin_term):
    cfg = Stage2Config(weights={"test_center": 0.5, "mask": 0.0})
    assert cfg.weights == {**DEFAULT_LOSS_WEIGHTS, "mask": 0.0, "test_center": 0.5}
    losses = Stage2Losses(cfg, C, D, text_prototypes(), True)
    assert list(losses.terms) == ["id", "imp", "i2t", "test-center"]
    losses.terms["imp"].memory.rebuild(*memory_init())
    out, batch = fake_batch()
    terms = losses(out, batch)
    x = out["features"]
    assert torch.equal(terms["test-center"], 0.5 * (x - x.mean(0)).pow(2).sum(1).mean())


def test_weights_from_config_overrides_keep_the_defaults():
    from muva.engine.config import load_experiment

    cfg = load_experiment(REPO / "configs" / "tiny.yaml", ["stage2.weights.center=0.5", "stage2.weights.imp=0"])
    assert cfg.stage2.weights == {"id": 1.0, "imp": 0.0, "i2t": 1.0, "mask": 1.0, "triplet": 0.0, "center": 0.5}
    clip = load_experiment(REPO / "configs" / "clipreid" / "market_to_duke.yaml", ["stage2.weights.center=2"])
    assert clip.stage2.weights == {"id": 0.25, "imp": 0.0, "i2t": 1.0, "mask": 0.0, "triplet": 1.0, "center": 2.0}


# ----------------------------------------------------------------------------- errors
def test_unknown_weight_name_lists_the_losses_and_the_import_option():
    from muva.config import ConfigError
    from muva.engine.config import ExperimentConfig
    from muva.engine.stage2 import check_stage2_losses

    cfg = ExperimentConfig(stage2=Stage2Config(weights={"centre": 0.5}))
    with pytest.raises(LossConfigError) as exc:
        check_stage2_losses(cfg)
    msg = str(exc.value)
    assert isinstance(exc.value, ConfigError)
    assert msg.startswith("stage2.weights.centre: unknown loss 'centre'.")
    assert "Available: i2t, id, imp, mask, triplet" in msg and "muva --import MODULE" in msg
    with pytest.raises(LossConfigError, match="unknown loss 'centre'"):
        Stage2Losses(cfg.stage2, C, D, None, True)
    assert check_stage2_losses(ExperimentConfig(stage2=Stage2Config(enabled=False, weights={"centre": 1}))) == {}


def test_other_weight_errors():
    with pytest.raises(LossConfigError, match=r"names the loss 'imp' twice \('imp' and 'cluster_memory'\)"):
        resolve_weights({"imp": 1.0, "cluster_memory": 1.0})
    zero = {"id": 0.0, "imp": 0.0, "i2t": 0.0, "mask": 1.0, "triplet": 0.0}
    with pytest.raises(LossConfigError, match="every stage-2 loss weight is 0 for a model without parts"):
        resolve_weights(zero, has_parts=False)
    assert resolve_weights(zero, has_parts=True) == {"mask": 1.0}
    with pytest.raises(LossConfigError, match=r"stage2.weights.mask > 0 needs pseudo masks"):
        resolve_weights(zero, has_parts=True, has_pseudo_masks=False)


def test_unknown_loss_on_the_command_line_is_one_error_line(tmp_path):
    """`muva train ... stage2.weights.<unregistered>=...`: exit 2, no traceback, nothing trained."""
    from muva.data.synth import SynthConfig, generate

    generate(SynthConfig(num_domains=1, ids_per_domain=4, test_ids_per_domain=2, images_per_id=4,
                         distractors_per_domain=0, width=64, height=128), tmp_path / "synth", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "muva", "train", "-c", str(REPO / "configs" / "tiny.yaml"), "-q",
                          "model.parts=[]", f"data.sources=[{tmp_path / 'synth' / 'domain_0'}]", "stage1.enabled=false",
                          "stage2.weights.centre=0.5", f"output.dir={out}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "error: stage2.weights.centre: unknown loss 'centre'" in res.stderr
    assert "muva --import MODULE" in res.stderr
    assert not (out / "last.pt").exists()


# ----------------------------------------------------------------------------- checkpoints
class _OldStage2Losses(torch.nn.Module):
    """The module layout of checkpoints written before loss terms (its state: the cluster memory)."""

    def __init__(self, cfg, text):
        super().__init__()
        self.ce = LabelSmoothingCE(cfg.label_smoothing)
        self.memory = ClusterMemory(D, C, cfg.memory_temperature, cfg.memory_momentum, cfg.memory_mode)
        self.mask = MaskLoss(cfg.mask_bce_weight, cfg.mask_dice_weight, 1.0, cfg.mask_dice_smooth)
        self.triplet = TripletLoss(cfg.triplet_margin)
        self.register_buffer("text", text, persistent=False)


def test_checkpoint_in_the_old_layout_still_loads():
    cfg = Stage2Config()
    old = _OldStage2Losses(cfg, text_prototypes())
    old.memory.rebuild(*memory_init(5))
    state = old.state_dict()
    assert set(state) == {"memory.memory", "memory.initialised"}

    losses = Stage2Losses(cfg, C, D, text_prototypes(), True)
    assert set(losses.state_dict()) == {"terms.imp.memory.memory", "terms.imp.memory.initialised"}
    losses.load_state_dict(state)  # strict, as the trainer's resume
    assert torch.equal(losses.terms["imp"].memory.memory, old.memory.memory) and bool(losses.terms["imp"].memory.initialised)
    out, batch = fake_batch()
    assert torch.equal(losses(out, batch)["imp"], old.memory(out["bn_features"], batch["pid"]))

    # the CLIP-ReID recipe (imp 0) saved the memory buffers too: they are dropped
    baseline = Stage2Losses(Stage2Config(weights={"imp": 0.0, "mask": 0.0, "triplet": 1.0}), C, D, text_prototypes(),
                            False)
    baseline.load_state_dict(state)

    # the new layout round-trips through a trainer's extra_state
    again = Stage2Losses(cfg, C, D, text_prototypes(), True)
    again.load_state_dict({"losses": losses.state_dict()}["losses"])
    assert torch.equal(again.terms["imp"].memory.memory, losses.terms["imp"].memory.memory)
