"""End-to-end training on tiny synthetic data: loss decreases, files, resume equality, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_tiny_data(root: Path) -> dict:
    """Two tiny synthetic domains + prior-expert grounding caches (about a second)."""
    from muva.data.synth import SynthConfig, generate
    from muva.grounding.experts import build_expert
    from muva.grounding.run import ground_images, resolve_images

    data = root / "synth"
    cfg = SynthConfig(num_domains=2, ids_per_domain=8, test_ids_per_domain=6, images_per_id=4,
                      distractors_per_domain=2, width=64, height=128)
    generate(cfg, data, progress=False, overwrite=True)
    caches = {}
    for d in ("domain_0", "domain_1"):
        caches[str(data / d)] = str(root / "ground" / f"{d}.sqlite")
        ground_images(resolve_images(str(data / d)), build_expert("prior"), caches[str(data / d)], progress=False)
    return {"source": str(data / "domain_0"), "target": str(data / "domain_1"), "caches": caches}


def tiny_overrides(data: dict, out: Path, *extra: str) -> list[str]:
    grounding = "{" + ", ".join(f"{k}: {v}" for k, v in data["caches"].items()) + "}"
    return [f"data.sources=[{data['source']}]", f"data.targets=[{data['target']}]", f"grounding.caches={grounding}",
            f"output.dir={out}", *extra]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny"))


def _losses(run_dir: Path) -> dict[tuple[str, int], float]:
    """Last logged total loss per (stage, step)."""
    from muva.engine.logging import read_metrics

    out = {}
    for rec in read_metrics(run_dir / "metrics.jsonl"):
        if "loss/total" in rec:
            out[(rec["stage"], rec["step"])] = rec["loss/total"]
    return out


def test_tiny_end_to_end_learns_and_writes_run_folder(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment
    from muva.models import load_model

    out = tmp_path / "run"
    cfg = load_experiment(TINY, tiny_overrides(tiny_data, out, "stage2.epochs=4", "eval.every=2"))
    exp = Experiment(cfg, quiet=True)
    results = exp.run()
    assert set(results) == {"synth-domain_1"}
    assert not (out / "best.pt").exists()  # target-selected checkpoints are opt-in (eval.keep_best)
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "model.safetensors", "results.md",
                 "results.csv", "results.json", "eval_history.json"):
        assert (out / name).is_file(), name
    from muva.engine.logging import read_metrics

    recs = read_metrics(out / "metrics.jsonl")
    s1 = [r["epoch_loss/total"] for r in recs if r.get("stage") == "stage1" and "epoch_loss/total" in r]
    s2 = [r["epoch_loss/total"] for r in recs if r.get("stage") == "stage2" and "epoch_loss/total" in r]
    assert len(s1) == 2 and len(s2) == 4
    assert s1[-1] < s1[0], s1  # prompt learning converges
    assert s2[-1] < s2[0], s2  # the stage-2 objective decreases ...
    # ... and so do its steadiest terms (L_imp and L_i2t jump when the cluster memory is rebuilt
    # each epoch, so on 8 random-init identities the total alone is a noisy signal)
    per_term = {k: [r[f"epoch_loss/{k}"] for r in recs if r.get("stage") == "stage2" and f"epoch_loss/{k}" in r]
                for k in ("id", "mask")}
    assert per_term["id"][-1] < per_term["id"][0], per_term
    assert per_term["mask"][-1] < 0.85 * per_term["mask"][0], per_term
    terms = {k for r in recs if r.get("stage") == "stage2" for k in r if k.startswith("loss/")}
    assert {"loss/id", "loss/imp", "loss/i2t", "loss/mask", "loss/total"} <= terms
    evals = json.loads((out / "eval_history.json").read_text())
    assert [e["epoch"] for e in evals] == [2, 4]
    assert "synth-domain_1" in (out / "results.md").read_text()
    model = load_model(out / "model.safetensors")  # inference-only reload works
    assert model.num_parts == 3


def test_resume_reproduces_identical_losses(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment
    from muva.engine.trainer import Hook

    extra = ("stage1.epochs=1", "stage2.epochs=3", "eval.every=0", "output.checkpoint_every=3")
    ref_dir = tmp_path / "ref"
    Experiment(load_experiment(TINY, tiny_overrides(tiny_data, ref_dir, *extra)), quiet=True).run()
    ref = _losses(ref_dir)

    class Crash(Hook):
        def after_step(self, trainer, losses):
            if trainer.name == "stage2" and trainer.global_iter == 4:  # mid-epoch, after the save at step 3
                raise KeyboardInterrupt("simulated crash")

    run_dir = tmp_path / "crash"
    cfg = load_experiment(TINY, tiny_overrides(tiny_data, run_dir, *extra))
    with pytest.raises(KeyboardInterrupt):
        Experiment(cfg, quiet=True, hooks=[Crash()]).run()
    from muva.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "last.pt")
    assert state["trainer"]["stage"] == "stage2" and state["trainer"]["global_iter"] == 3
    Experiment(cfg, resume=True, quiet=True).run()
    got = _losses(run_dir)
    assert set(got) == set(ref)
    assert any(stage == "stage2" and step > 4 for stage, step in got)
    for key in ref:
        assert got[key] == ref[key], (key, got[key], ref[key])  # bit-identical on CPU


def test_resume_between_stages_skips_stage1(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment
    from muva.engine.trainer import Hook

    class StopAtStage2(Hook):
        def before_train(self, trainer):
            if trainer.name == "stage2":
                raise KeyboardInterrupt

    out = tmp_path / "run"
    cfg = load_experiment(TINY, tiny_overrides(tiny_data, out, "stage2.epochs=1", "eval.every=0"))
    with pytest.raises(KeyboardInterrupt):
        Experiment(cfg, quiet=True, hooks=[StopAtStage2()]).run()
    exp = Experiment(cfg, resume=True, quiet=True)
    exp.run()
    assert exp.stage1_loss == {}  # stage 1 was not run again
    assert exp.stage2_loss


def test_missing_grounding_cache_names_the_command(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment
    from muva.grounding import GroundingCacheError

    over = tiny_overrides(tiny_data, tmp_path / "run") + [f"grounding.caches={{{tiny_data['source']}: {tmp_path}/none.sqlite}}"]
    cfg = load_experiment(TINY, over)
    with pytest.raises(GroundingCacheError, match="muva ground"):
        Experiment(cfg, quiet=True).run()


def test_training_on_imported_author_masks_keeps_them_exactly(tiny_data, tmp_path):
    """The authors' pickle (additive R×L masks, some parts empty) → import → training uses those masks unchanged."""
    import math
    import pickle

    import numpy as np

    from muva.data.datasets import open_dataset
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment
    from muva.grounding.experts.importer import ImportExpert
    from muva.grounding.run import ground_images, resolve_images

    src = tiny_data["source"]
    rng = np.random.default_rng(3)
    truth = {}
    for i, rec in enumerate(open_dataset(src).train):
        m = np.zeros((3, 8, 4), dtype=bool)
        m[0, :2], m[1, 2:5], m[2, 5:] = True, True, True
        m &= rng.random(m.shape) > 0.2
        if i % 3 == 0:
            m[0] = False  # the head was not found
        truth[Path(rec.path).name] = m.reshape(3, 32)
    with open(tmp_path / "authors.pkl", "wb") as fh:
        pickle.dump({k: np.where(v, 0.0, -np.inf) for k, v in truth.items()}, fh)
    cache = tmp_path / "import.sqlite"
    ground_images(resolve_images(src, splits=("train",)), ImportExpert(masks=tmp_path / "authors.pkl", grid=(8, 4)),
                  cache, progress=False)
    over = tiny_overrides(tiny_data, tmp_path / "run", "stage1.epochs=1", "stage2.epochs=1", "eval.every=0",
                          "grounding.missing=error")
    over = [o for o in over if not o.startswith("grounding.caches=")] + [f"grounding.caches={{{src}: {cache}}}"]
    exp = Experiment(load_experiment(TINY, over), quiet=True)
    exp.run()
    assert len(exp.masks) == len(truth)
    for path, mask in exp.masks.items():
        assert (mask == truth[Path(path).name]).all(), path
    assert math.isfinite(exp.stage2_loss["total"])


def test_min_fraction_decides_the_training_masks(tiny_data):
    """grounding.min_fraction is the box → patch rule of training (a larger share gives smaller masks)."""
    from muva.engine.config import load_experiment
    from muva.engine.data import build_pseudo_masks, build_sources
    from muva.grounding.masks import load_pseudo_masks

    def masks(fraction):
        cfg = load_experiment(TINY, tiny_overrides(tiny_data, Path("unused"), f"grounding.min_fraction={fraction}"))
        train = build_sources(cfg.data, check_images=False)
        return train, build_pseudo_masks(train, cfg.data, cfg.grounding, cfg.model.parts, cfg.model.input_size, 16)

    train, half = masks(0.5)
    _, most = masks(0.9)
    cache = tiny_data["caches"][tiny_data["source"]]
    direct = load_pseudo_masks(train.records, cache, input_size=(128, 64), min_fraction=0.9)
    assert all((most[p] == direct[p]).all() for p in direct)
    assert sum(int(m.sum()) for m in most.values()) < sum(int(m.sum()) for m in half.values())


def test_global_baseline_recipe_runs(tiny_data, tmp_path):
    """CLIP-ReID recipe from the same engine: no parts, SupCon stage 1, 0.25 ID + triplet + i2t, SIE, crop/erasing."""
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment

    out = tmp_path / "base"
    cfg = load_experiment(TINY, tiny_overrides(
        tiny_data, out, "model.parts=[]", "model.sie=true", "stage1.loss=supcon", "stage2.epochs=2",
        "stage2.weights={id: 0.25, imp: 0.0, i2t: 1.0, mask: 0.0, triplet: 1.0}", "data.transforms.pad=4",
        "data.transforms.random_crop=true", "data.transforms.erasing_p=0.5", "eval.every=0"))
    results = Experiment(cfg, quiet=True).run()
    assert 0.0 <= results["synth-domain_1"].mAP <= 1.0
    from muva.engine.logging import read_metrics

    keys = {k for r in read_metrics(out / "metrics.jsonl") for k in r}
    assert "loss/triplet" in keys and "loss/supcon" in keys and "loss/mask" not in keys


def test_protocol_run_on_synthetic_domains_writes_one_table(tiny_data, tmp_path):
    from rich.console import Console

    from muva.engine.protocol import run_protocol

    root = str(Path(tiny_data["source"]).parent)
    grounding = "{synth-domain_0: %s, synth-domain_1: %s}" % tuple(tiny_data["caches"].values())
    over = [f"grounding.caches={grounding}", "stage1.epochs=1", "stage2.epochs=1", "eval.every=0"]
    console = Console(record=True, width=200)
    plan = run_protocol(f"synth:{root}", TINY, over, out=tmp_path / "p", dry_run=True, console=console)
    assert plan == {} and "domain_0->domain_1" in console.export_text()
    assert not (tmp_path / "p").exists()  # a dry run trains nothing
    results = run_protocol(f"synth:{root}", TINY, over, out=tmp_path / "p", console=console)
    assert set(results) == {"domain_0->domain_1", "domain_1->domain_0"}
    md = (tmp_path / "p" / "protocol.md").read_text()
    assert "domain_0->domain_1 mAP" in md and "| ours: tiny #" in md
    # finished settings are not retrained
    again = run_protocol(f"synth:{root}", TINY, over, out=tmp_path / "p", console=console)
    assert {k: {t: v.mAP for t, v in r.items()} for k, r in again.items()} == \
           {k: {t: v.mAP for t, v in r.items()} for k, r in results.items()}


def test_protocol_settings_map_to_experiment_configs():
    from muva.data.protocols import get_protocol
    from muva.engine.config import load_experiment
    from muva.engine.protocol import setting_config

    base = load_experiment(REPO / "configs" / "muva" / "base_vitb16.yaml")
    s = get_protocol("single-source").setting("MA->C3")
    cfg = setting_config(base, s, Path("runs/x"))
    assert cfg.data.sources == ["market1501"] and cfg.data.targets == ["cuhk03np"]
    assert cfg.data.dataset_options["cuhk03np"] == {"variant": "detected"}
    p1 = get_protocol("protocol1").settings[0]
    cfg1 = setting_config(base, p1, Path("runs/x"))
    assert cfg1.data.source_split == "all" and cfg1.data.target_splits["viper"] == 10


def test_every_preset_loads_and_follows_the_reference_recipe():
    from muva.engine.config import load_experiment

    presets = sorted((REPO / "configs" / "muva").glob("*.yaml")) + sorted((REPO / "configs" / "clipreid").glob("*.yaml"))
    assert len(presets) == 34  # base + 12 single-source + 4 leave-one-out, for MUVA and CLIP-ReID
    for p in presets:
        cfg = load_experiment(p)
        if p.stem != "base_vitb16":
            assert cfg.data.sources and cfg.data.targets and cfg.output.dir.endswith(p.stem)
    muva = load_experiment(REPO / "configs" / "muva" / "market_to_duke.yaml")
    assert (muva.stage1.epochs, muva.stage1.optim.lr, muva.stage2.epochs, muva.stage2.optim.lr) == (120, 3.5e-4, 60, 5e-6)
    assert muva.stage2.optim.lr_mult == {"mask_predictor": 10.0} and muva.stage2.schedule.milestones == [30, 50]
    assert muva.model.parts == ["head", "upper_body", "legs"] and muva.data.batch_size == 64 and muva.seed == 1234
    clip = load_experiment(REPO / "configs" / "clipreid" / "market_to_duke.yaml")
    assert clip.model.parts == [] and clip.model.sie and clip.stage1.loss == "supcon"
    assert clip.stage2.weights == {"id": 0.25, "imp": 0.0, "i2t": 1.0, "mask": 0.0, "triplet": 1.0}
