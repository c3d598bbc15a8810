"""Engine pieces: schedules at key epochs, optimiser groups, atomic checkpoints, the hook loop."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from muva.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from muva.engine.config import OptimConfig
from muva.engine.optim import param_groups
from muva.engine.schedulers import LRScheduler, WarmupCosine, WarmupMultiStep
from muva.engine.trainer import Hook, Trainer, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]


def test_stage2_multistep_values_at_key_epochs():
    s = WarmupMultiStep(milestones=(30, 50), gamma=0.1, warmup_epochs=10, warmup_factor=0.1)
    lr = 5e-6
    assert s.lr(lr, 0) == pytest.approx(5e-7)
    assert s.lr(lr, 5) == pytest.approx(lr * (0.1 * 0.5 + 0.5))
    assert s.lr(lr, 10) == pytest.approx(lr)
    assert s.lr(lr, 29) == pytest.approx(lr)
    assert s.lr(lr, 30) == pytest.approx(lr * 0.1)
    assert s.lr(lr, 49) == pytest.approx(lr * 0.1)
    assert s.lr(lr, 50) == pytest.approx(lr * 0.01)
    assert s.lr(lr * 10, 40) == pytest.approx(5e-6)  # mask predictor group keeps its x10


def _paper_lrs(stage: str) -> tuple[list[float], float, int]:
    """Every epoch's lr of a paper preset's stage, as the trainer sets it (0-based epochs)."""
    from muva.engine.config import load_experiment
    from muva.engine.schedulers import scheduler_from_config

    cfg = load_experiment(REPO / "configs/muva/market_to_duke.yaml")
    sc = getattr(cfg, stage)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=sc.optim.lr)
    sch = scheduler_from_config(opt, sc.schedule, sc.epochs)
    lrs = []
    for epoch in range(sc.epochs):
        sch.on_iteration(epoch, 0, 100)
        lrs.append(sch.get_last_lr()[0])
        sch.on_iteration(epoch, 99, 100)
        assert sch.get_last_lr()[0] == lrs[-1]  # stepped per epoch
    return lrs, sc.optim.lr, sc.epochs


def test_paper_stage2_lr_of_every_epoch():
    """Stepped with the 1-based epoch k before each epoch: warm-up 0.1 → 1 over 10, ×0.1 from k = 30 and 50."""
    lrs, base, epochs = _paper_lrs("stage2")
    assert (base, epochs) == (5e-6, 60)
    for e, lr in enumerate(lrs):
        k = e + 1
        warm = 0.1 * (1 - k / 10) + k / 10 if k < 10 else 1.0
        assert lr == pytest.approx(base * warm * 0.1 ** (k >= 30) * 0.1 ** (k >= 50), rel=1e-12), k
    assert lrs[0] == pytest.approx(0.19 * base) and lrs[8] == pytest.approx(0.91 * base) and lrs[9] == pytest.approx(base)
    assert lrs[28] == pytest.approx(base) and lrs[29] == pytest.approx(0.1 * base) and lrs[49] == pytest.approx(0.01 * base)


def test_paper_stage1_lr_of_every_epoch():
    """Linear warm-up from 1e-5 over 5 epochs, cosine from 3.5e-4 to 1e-6 over 120, 1-based: the last epoch is at the floor."""
    lrs, base, epochs = _paper_lrs("stage1")
    assert (base, epochs) == (3.5e-4, 120)
    for e, lr in enumerate(lrs):
        k = e + 1
        want = 1e-5 + k * (base - 1e-5) / 5 if k < 5 else 1e-6 + 0.5 * (base - 1e-6) * (1 + math.cos(math.pi * k / 120))
        assert lr == pytest.approx(want, rel=1e-12), k
    assert lrs[0] == pytest.approx(1e-5 + (base - 1e-5) / 5) and lrs[-1] == pytest.approx(1e-6)


def test_stage1_cosine_values_at_key_epochs():
    s = WarmupCosine(max_epochs=120, warmup_epochs=5, warmup_lr=1e-5, min_lr=1e-6)
    base = 3.5e-4
    assert s.lr(base, 0) == pytest.approx(1e-5)
    assert s.lr(base, 2.5) == pytest.approx(1e-5 + (base - 1e-5) / 2)
    assert s.lr(base, 60) == pytest.approx(1e-6 + 0.5 * (base - 1e-6))
    assert s.lr(base, 120) == pytest.approx(1e-6)


def test_scheduler_sets_each_group_and_restores_state():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 10.0}])
    sch = LRScheduler(opt, WarmupMultiStep((2,), 0.1, 0, 0.1), epoch_base=0)
    sch.on_iteration(2, 0, 5)
    assert sch.get_last_lr() == pytest.approx([0.1, 1.0])
    state = sch.state_dict()
    sch.step_to(0)
    sch.load_state_dict(state)
    assert sch.get_last_lr() == pytest.approx([0.1, 1.0])
    per_iter = LRScheduler(opt, WarmupMultiStep((), 0.1, 1, 0.0), per_iteration=True, epoch_base=0)
    per_iter.on_iteration(0, 2, 4)
    assert per_iter.get_last_lr()[0] == pytest.approx(0.5)


def test_param_groups_mask_predictor_lr_x10_no_decay_and_bias_rules():
    model = torch.nn.ModuleDict({"visual": torch.nn.Linear(2, 2), "mask_predictor": torch.nn.Linear(2, 2)})
    model["visual"].weight.requires_grad_(False)
    cfg = OptimConfig(lr=5e-6, weight_decay=1e-4, bias_lr_factor=2.0, weight_decay_bias=0.0)
    groups = {n: (g["lr"], g["weight_decay"]) for g in param_groups(model.named_parameters(), cfg) for n in g["names"]}
    assert "visual.weight" not in groups  # frozen parameters are left out
    assert groups["visual.bias"] == (pytest.approx(1e-5), 0.0)
    assert groups["mask_predictor.weight"] == (pytest.approx(5e-5), 0.0)
    assert groups["mask_predictor.bias"] == (pytest.approx(1e-4), 0.0)


def test_checkpoint_roundtrip_and_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", {"x": torch.arange(3), "epoch": 2})
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["x"], torch.arange(3))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"w": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a muva training checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(1000)})
    import muva.engine.checkpoint as ck

    real = ck.atomic_write

    class Boom(Exception):
        pass

    from contextlib import contextmanager

    @contextmanager
    def failing(p, mode="wb"):
        with real(p, mode) as fh:
            class Half:
                def write(self, data):
                    fh.write(bytes(data)[: len(data) // 2])
                    raise Boom("disk full")
            yield Half()

    monkeypatch.setattr(ck, "atomic_write", failing)
    with pytest.raises(Boom):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_kill_9_during_writes_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    script = (
        "import sys, torch\n"
        "from muva.engine.checkpoint import save_checkpoint\n"
        "i = 0\n"
        "while True:\n"
        "    save_checkpoint(sys.argv[1], {'epoch': i, 'w': torch.full((2_000_000,), float(i))})\n"
        "    i += 1\n"
        "    print(i, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # wait for a few completed writes, then kill mid-stream
            if not proc.stdout.readline():
                break
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    state = load_checkpoint(path)
    assert state["epoch"] >= 2 and float(state["w"][0]) == float(state["epoch"])


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)


class _Sampler:
    seed = 0

    def __init__(self, n):
        self.n = n
        self.start = 0

    def set_epoch(self, epoch, start_batch=0):
        self.start = start_batch

    def batches_per_epoch(self):
        return self.n


def _trainer(hooks=(), lr=0.1, **kw):
    torch.manual_seed(0)
    model = _Toy()
    x = torch.randn(8, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    sampler = _Sampler(4)

    class Loader:
        def __iter__(self):
            for _ in range(sampler.start, sampler.n):
                yield {"x": x, "y": y}

    def step(trainer, batch):
        return {"ce": torch.nn.functional.cross_entropy(model.lin(batch["x"]), batch["y"])}

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(model, opt, step, Loader(), sampler, 3, hooks=hooks, **kw)


def test_trainer_hooks_order_counters_and_decreasing_loss():
    events = []

    class Rec(Hook):
        def before_train(self, t): events.append("train")
        def before_epoch(self, t): events.append(f"e{t.epoch}")
        def after_step(self, t, losses): events.append(losses["ce"])
        def after_epoch(self, t): events.append(f"/e{t.epoch}")
        def after_train(self, t): events.append("end")

    tr = _trainer([Rec()])
    tr.train()
    assert events[0] == "train" and events[1] == "e0" and events[-1] == "end"
    assert tr.global_iter == 12 and tr.epoch == 3 and tr.finished
    losses = [e for e in events if isinstance(e, float)]
    assert losses[-1] < losses[0]


def test_trainer_state_roundtrip_and_divergence_error():
    tr = _trainer()
    tr.train()
    state = tr.state_dict()
    other = _trainer()
    other.load_state_dict(state)
    assert other.global_iter == 12 and torch.equal(other.model.lin.weight, tr.model.lin.weight)
    with pytest.raises(ValueError, match="stage"):
        _trainer(name="stage1").load_state_dict(state)
    bad = _trainer()
    bad.step_fn = lambda trainer, batch: {"ce": bad.model.lin.weight.sum() * float("nan")}
    with pytest.raises(TrainingDiverged, match="grad_clip"):
        bad.train()


def test_amp_on_cpu_falls_back_with_a_note():
    tr = _trainer(amp="fp16")
    assert tr.amp == "none" and "CUDA" in tr.notes[0]
    with pytest.raises(ValueError):
        _trainer(amp="fp8")


def test_callback_hook_runs_given_events_and_rejects_unknown_ones():
    from muva.engine.hooks import CallbackHook

    seen = []
    hook = CallbackHook(before_epoch=lambda t: seen.append(("before_epoch", t)),
                        after_step=lambda t, losses: seen.append(("after_step", t, losses)))
    hook.before_train("T")  # not given: the base class's no-op
    hook.before_epoch("T")
    hook.after_step("T", {"loss": 1.0})
    assert seen == [("before_epoch", "T"), ("after_step", "T", {"loss": 1.0})]
    with pytest.raises(ValueError, match="unknown hook event.*before_epcoh"):
        CallbackHook(before_epcoh=print)
