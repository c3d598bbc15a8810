"""The optimised training paths give the eager reference's numbers: bit for bit in fp32 on the
CPU (attention mask by one gather, split instead of slices, foreach optimisers), within float
tolerance under ``torch.compile`` — which compiles one graph for every batch size and has no
graph breaks."""

from __future__ import annotations

import math

import pytest
import torch

from muva.models import build_model, tiny_config
from muva.models.masking import attention_mask_index, build_attention_mask, pseudo_gate
from test_train import TINY, make_tiny_data, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEG = float("-inf")


def reference_mask(gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mask written out by the rules, block by block (the straightforward concatenation)."""
    b, r, l = gate.shape
    n = 1 + r + l
    gate = gate.to(dtype)
    part_part = torch.full((r, r), NEG, dtype=dtype)
    part_part.fill_diagonal_(0.0)
    part_rows = torch.cat([torch.zeros(b, r, 1, dtype=dtype), part_part.expand(b, r, r), gate], dim=2)
    patch_rows = torch.cat([torch.zeros(b, l, 1, dtype=dtype), gate.transpose(1, 2), torch.zeros(b, l, l, dtype=dtype)], dim=2)
    return torch.cat([torch.zeros(b, 1, n, dtype=dtype), part_rows, patch_rows], dim=1).unsqueeze(1)


def reference_encode(enc, images, pseudo_masks=None):
    """The encoder's forward without the fast paths: slices, the concatenated mask, a cast per layer."""
    x = enc.embed(images)
    r = enc.num_parts
    fixed = reference_mask(pseudo_gate(pseudo_masks), x.dtype) if pseudo_masks is not None else None
    acc, logits = None, []
    for i, blk in enumerate(enc.vit.transformer.resblocks):
        mask = fixed
        if fixed is None:
            inc = enc.mask_predictors[i](x[:, 1 : 1 + r], x[:, 1 + r :])
            acc = inc if acc is None else acc + inc
            logits.append(acc)
            mask = reference_mask(enc._gate(acc), x.dtype)
        x = enc.block(blk, x, mask, 1 + r if i == enc.num_layers - 1 else None)
    return enc.vit.ln_post(x[:, : 1 + r]) @ enc.vit.proj, logits


@pytest.mark.parametrize("r,l", [(1, 1), (3, 32), (4, 128), (5, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gathered_mask_equals_the_rules(r, l, dtype):
    g = torch.Generator().manual_seed(r * 100 + l)
    soft = torch.randn(3, r, l, generator=g) * 4  # online gating's soft values
    hard = pseudo_gate(torch.rand(3, r, l, generator=g) > 0.5)
    for gate in (soft, hard):
        assert torch.equal(build_attention_mask(gate, dtype), reference_mask(gate, dtype))
        idx = attention_mask_index(r, l)
        assert idx.shape == (1 + r + l,) * 2 and int(idx.max()) == r * l + (r > 1)  # the −inf slot only with 2+ parts


@pytest.mark.parametrize("gating", ["offline", "online"])
@pytest.mark.parametrize("pseudo", [False, True])
def test_encoder_forward_and_gradients_are_bit_identical_to_the_reference(gating, pseudo):
    torch.manual_seed(0)
    model = build_model(tiny_config(mask_gating=gating), num_classes=4)
    model.train()
    enc = model.visual
    images = torch.randn(3, 3, 128, 64)
    masks = (torch.rand(3, enc.num_parts, enc.num_patches) > 0.4) if pseudo else None
    runs = []
    for fn in (lambda: reference_encode(enc, images, masks),
               lambda: (lambda o: (o.tokens, o.mask_logits))(enc(images, pseudo_masks=masks))):
        model.zero_grad(set_to_none=True)
        tokens, logits = fn()
        loss = tokens.square().mean() + sum(torch.sigmoid(z).mean() for z in logits)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
        runs.append((tokens.detach(), [z.detach() for z in logits], grads))
    (t0, l0, g0), (t1, l1, g1) = runs
    assert torch.equal(t0, t1)
    assert len(l0) == len(l1) == (0 if pseudo else enc.num_layers)
    assert all(torch.equal(a, b) for a, b in zip(l0, l1))
    assert g0.keys() == g1.keys() and any("mask_predictors" in n for n in g0) != pseudo
    for name in g0:
        assert torch.equal(g0[name], g1[name]), name


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_foreach_optimisers_match_the_per_tensor_loop_bit_for_bit(name):
    from muva.engine.config import OptimConfig
    from muva.engine.optim import build_optimizer

    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2), (11,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    cfg = OptimConfig(name=name, lr=1e-2, weight_decay=1e-3, lr_mult={"p0": 10.0}, no_weight_decay=["p1"])
    fast = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = build_optimizer([(f"p{i}", p) for i, p in enumerate(fast)], cfg)
    assert all(g["foreach"] for g in opt.param_groups)
    slow = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ref = build_optimizer([(f"p{i}", p) for i, p in enumerate(slow)], cfg)
    for g in ref.param_groups:
        g["foreach"] = False
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for group, o in ((fast, opt), (slow, ref)):
            for p, gr in zip(group, grads):
                p.grad = gr.clone()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))


def test_divergence_is_caught_before_the_update():
    from muva.engine.trainer import Trainer, TrainingDiverged

    class Sampler:
        seed = 0

        def set_epoch(self, epoch, start): ...

        def batches_per_epoch(self):
            return 1

    lin = torch.nn.Linear(3, 1)
    before = lin.weight.detach().clone()
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    step = lambda trainer, batch: {"ce": lin(batch["x"]).sum() * math.inf}  # noqa: E731
    trainer = Trainer(lin, opt, step, [{"x": torch.ones(2, 3)}], Sampler(), 1, is_main=False)
    with pytest.raises(TrainingDiverged, match="loss is"):
        trainer.train()
    assert torch.equal(lin.weight, before)


@pytest.mark.parametrize("gating", ["offline", "online"])
def test_training_forward_has_no_graph_breaks(gating):
    torch._dynamo.reset()
    model = build_model(tiny_config(mask_gating=gating), num_classes=4)
    model.train()
    images = torch.randn(4, 3, 128, 64)
    masks = torch.rand(4, model.num_parts, model.num_patches) > 0.5
    for kwargs in ({}, {"pseudo_masks": masks}):
        report = torch._dynamo.explain(model)(images, **kwargs)
        assert report.graph_break_count == 0, report.break_reasons
        assert report.graph_count == 1


def test_missing_toolchain_is_one_clear_error(monkeypatch):
    from muva.models.compile import CompileError, check_compile_toolchain, compile_model

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("muva.models.compile.shutil.which", lambda name: None)
    with pytest.raises(CompileError, match="C\\+\\+ compiler.*compile=false"):
        check_compile_toolchain("cpu")
    with pytest.raises(CompileError, match="compile_mode"):
        compile_model(torch.nn.Linear(2, 2), mode="fast")


def _have_cxx() -> bool:
    from muva.models.compile import CompileError, check_compile_toolchain

    try:
        check_compile_toolchain("cpu")
    except CompileError:
        return False
    return True


needs_cxx = pytest.mark.skipif(not _have_cxx(), reason="torch.compile on the CPU needs a C++ compiler (g++)")


@needs_cxx
def test_compiled_forward_matches_eager_and_compiles_once_for_every_batch_size():
    from torch._dynamo.utils import counters

    from muva.engine.config import load_experiment
    from muva.models import compile_model

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    # configs/tiny.yaml's model with the synthetic data's 8 identities: the graph the next test
    # compiles through `muva train`, so PyTorch's compile cache serves it there
    model = build_model(load_experiment(TINY).model, num_classes=8)
    model.train()
    compiled = compile_model(model)
    gen = torch.Generator().manual_seed(2)
    for batch in (4, 3, 5, 4):  # the short last batch of an epoch must not recompile
        images = torch.randn(batch, 3, 128, 64, generator=gen)
        results = []
        for forward in (model, compiled):
            model.zero_grad(set_to_none=True)
            out = forward(images)
            loss = out["logits"].logsumexp(1).mean() + out["features"].square().mean() \
                + sum(torch.sigmoid(z).mean() for z in out["mask_logits"])
            loss.backward()
            results.append((out["features"].detach(), loss.detach(),
                            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        (f0, l0, g0), (f1, l1, g1) = results
        torch.testing.assert_close(f1, f0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
        assert g0.keys() == g1.keys()
        for name in g0:
            torch.testing.assert_close(g1[name], g0[name], rtol=1e-3, atol=1e-5, msg=name)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


@needs_cxx
def test_compile_true_trains_the_tiny_experiment_like_eager(tmp_path):
    from torch._dynamo.utils import counters

    import yaml

    from muva.engine.config import load_experiment
    from muva.engine.logging import read_metrics
    from muva.engine.run import Experiment
    from muva.models import load_model

    data = make_tiny_data(tmp_path)
    extra = ("stage1.epochs=1", "stage2.epochs=2", "eval.every=0", "data.targets=[]")
    losses, models = {}, {}
    for flag in ("false", "true"):
        out = tmp_path / f"compile_{flag}"
        torch._dynamo.reset()  # (a graph compiled earlier in this process would be reused silently)
        counters.clear()
        Experiment(load_experiment(TINY, tiny_overrides(data, out, *extra, f"compile={flag}")), quiet=True).run()
        losses[flag] = [r["loss/total"] for r in read_metrics(out / "metrics.jsonl")
                        if r.get("stage") == "stage2" and "loss/total" in r]
        models[flag] = load_model(out / "model.safetensors").state_dict()
        assert yaml.safe_load((out / "config.yaml").read_text())["compile"] is (flag == "true")  # the resolved config says so
        assert counters["stats"].get("unique_graphs", 0) == (1 if flag == "true" else 0)
    assert len(losses["true"]) == len(losses["false"]) >= 4
    torch.testing.assert_close(torch.tensor(losses["true"]), torch.tensor(losses["false"]), rtol=1e-3, atol=1e-5)
    # checkpoints do not change with compilation (weights are not compared one by one: Adam turns
    # float-rounding differences in near-zero gradients into steps of ±lr)
    assert models["true"].keys() == models["false"].keys()


def _loop_update(memory, x, targets, momentum, mode):
    """The cluster-memory update written per identity (a loop with two host reads each)."""
    import torch.nn.functional as F

    memory = memory.clone()
    for pid in torch.unique(targets).tolist():
        feats = x[targets == pid]
        chosen = feats[int(torch.argmin(feats @ memory[pid]))] if mode == "hard" else feats.mean(0)
        memory[pid] = F.normalize(momentum * memory[pid] + (1.0 - momentum) * chosen, dim=0)
    return memory


@pytest.mark.parametrize("mode", ["hard", "mean"])
@pytest.mark.parametrize("classes,dim,batch", [(64, 2048, 64), (751, 512, 16), (10, 7, 37)])
def test_vectorised_memory_update_equals_the_per_identity_loop(mode, classes, dim, batch):
    import torch.nn.functional as F

    from muva.losses.memory import momentum_update

    g = torch.Generator().manual_seed(classes + batch)
    memory = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    x = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    for targets in (torch.arange(batch) // 4 % classes, torch.randint(0, classes, (batch,), generator=g)):
        got = momentum_update(memory, x, targets, 0.2, mode)
        if mode == "hard":  # MUVA's mode: the same sample is chosen and the same row written, bit for bit
            assert torch.equal(got, _loop_update(memory, x, targets, 0.2, mode))
        else:  # a sum over the batch differs from torch.mean's reduction in the last bit
            torch.testing.assert_close(got, _loop_update(memory, x, targets, 0.2, mode), rtol=1e-6, atol=1e-7)
        untouched = torch.ones(classes, dtype=torch.bool)
        untouched[targets] = False
        assert torch.equal(got[untouched], memory[untouched])


def test_memory_update_takes_the_first_of_equally_hard_samples():
    from muva.losses.memory import momentum_update

    memory = torch.eye(3)  # identity 1's centroid is e1
    x = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.5, 0.8], [0.6, 0.5, -0.6], [0.0, 0.9, 0.1]])
    targets = torch.tensor([0, 1, 1, 1])  # samples 1 and 2 are equally hard for identity 1 (x·e1 = 0.5)
    got = momentum_update(memory, x, targets, 0.2, "hard")
    assert torch.equal(got, _loop_update(memory, x, targets, 0.2, "hard"))
    expect = torch.nn.functional.normalize(0.2 * memory[1] + 0.8 * x[1], dim=0)  # the first of the two
    assert torch.equal(got[1], expect) and torch.equal(got[2], memory[2])


SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::masked_select"}


#: stage-2 weights of the CLIP-ReID baseline (as benchmarks/bench_train.py)
BASELINE_WEIGHTS = {"id": 0.25, "imp": 0.0, "i2t": 1.0, "mask": 0.0, "triplet": 1.0}


@pytest.mark.parametrize("muva", [True, False], ids=["MUVA", "CLIP-ReID"])
def test_training_step_reads_nothing_back_before_the_logged_values(muva):
    """Forward, the whole objective and backward: no .item(), no boolean indexing, no unique —
    on a GPU each would stall the host once per step (or per identity)."""
    from torch.profiler import ProfilerActivity, profile

    from muva.engine.config import Stage2Config
    from muva.engine.stage2 import Stage2Losses

    torch.manual_seed(0)
    model = build_model(tiny_config(**({} if muva else {"parts": []})), num_classes=8)
    model.train()
    s2 = Stage2Config() if muva else Stage2Config(weights=BASELINE_WEIGHTS)
    losses = Stage2Losses(s2, 8, model.feature_dim, torch.randn(8, model.feature_dim), muva)
    for term in losses.epoch_terms():
        term.rebuild(torch.randn(16, model.feature_dim), torch.arange(8).repeat(2))
    batch = {"pid": torch.arange(16) // 4 % 8, "mask": torch.rand(16, model.num_parts, model.num_patches) > 0.5}
    images = torch.randn(16, 3, 128, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        total = sum(losses(model(images), batch).values())
        total.backward()
    syncs = [e.name for e in prof.events() if e.name in SYNC_OPS]
    assert syncs == [], syncs
    assert set(losses.terms) == ({"id", "imp", "i2t", "mask"} if muva else {"id", "i2t", "triplet"})


@pytest.mark.parametrize("margin", [0.3, None])
def test_sync_free_triplet_equals_the_mean_over_valid_anchors(margin):
    import torch.nn.functional as F

    from muva.losses.triplet import batch_hard_triplet, pairwise_euclidean

    def indexed(x, labels):  # the mean written with boolean indexing
        dist = pairwise_euclidean(x)
        same = labels.view(-1, 1) == labels.view(1, -1)
        pos, neg = same & ~torch.eye(len(labels), dtype=torch.bool), ~same
        valid = pos.any(1) & neg.any(1)
        d_ap = torch.where(pos, dist, torch.full_like(dist, -1.0)).max(1).values[valid]
        d_an = torch.where(neg, dist, torch.full_like(dist, float("inf"))).min(1).values[valid]
        return (F.softplus(d_ap - d_an) if margin is None else F.relu(d_ap - d_an + margin)).mean()

    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 24, generator=g)
    pk = torch.arange(16) // 4  # a P×K batch: every anchor is valid — the same numbers bit for bit
    assert torch.equal(batch_hard_triplet(x, pk, margin), indexed(x, pk))
    lonely = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])  # identity 2 has no positive: left out of the mean
    torch.testing.assert_close(batch_hard_triplet(x[:8], lonely, margin), indexed(x[:8], lonely))
    one = torch.zeros(4, dtype=torch.long)  # no negatives at all: 0, with a (zero) gradient
    xr = x[:4].clone().requires_grad_()
    loss = batch_hard_triplet(xr, one, margin)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(xr.grad, torch.zeros_like(xr))
