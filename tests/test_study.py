"""The study machinery: sweeps over a protocol's settings, grounding before a sweep, the mean over
targets, the paper's numbers, part-mask IoU against the true parts, and the study presets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from muva.data.protocols import get_protocol, published_results
from muva.engine.config import load_experiment
from muva.engine.mask_quality import MASK_IOU_FILE, patch_iou, true_part_records
from muva.engine.protocol_settings import setting_config, setting_overrides
from muva.engine.sweep.aggregate import aggregate
from muva.engine.sweep.plan import PLAN_FILE, SweepError, load_sweep_file, make_plan
from muva.engine.sweep.runner import grounding_needed
from muva.evaluation import evaluate, save_per_query
from test_sweep import REPO, TINY, muva

STUDY = REPO / "configs" / "study"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Three tiny synthetic domains (no grounding caches yet)."""
    from muva.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("study")
    generate(SynthConfig(num_domains=3, ids_per_domain=6, test_ids_per_domain=5, images_per_id=4,
                         distractors_per_domain=2, width=64, height=128), root / "data", progress=False, overwrite=True)
    return root


# ----------------------------------------------------------------------------- plans over a protocol
def test_a_protocol_sweep_runs_every_variant_on_every_setting(bench):
    plan = make_plan(TINY, [f"grounding.dir={bench}"], bench / "sw", seeds=2, variants={"a": {}, "b": {"model.parts": []}},
                     protocol=f"synth-loo:{bench / 'data'}")
    assert len(plan.settings) == 3 and all("->" in s for s in plan.settings)
    assert len(plan.runs) == 3 * 2 * 2
    folders = [r.folder for r in plan.runs]
    assert len(set(folders)) == len(folders)
    assert folders[0] == "domain_1-domain_2_to_domain_0/a/seed1234"
    protocol = get_protocol(f"synth-loo:{bench / 'data'}")
    base = load_experiment(TINY, [f"grounding.dir={bench}"])
    for run in plan.runs:  # the same data as muva protocol run trains the setting on
        setting = protocol.setting(run.setting)
        assert plan.run_config(run).data == setting_config(base, setting, Path("x")).data
        assert plan.run_config(run).output.dir == str(bench / "sw" / run.folder)
    # a chosen setting, and names that do not exist
    one = make_plan(TINY, [], bench / "sw1", protocol=f"synth-loo:{bench / 'data'}", settings=["domain_0+domain_1->domain_2"])
    assert {r.setting for r in one.runs} == {"domain_0+domain_1->domain_2"}
    with pytest.raises(SweepError, match="has no setting"):
        make_plan(TINY, [], bench / "x", protocol=f"synth-loo:{bench / 'data'}", settings=["nope"])
    with pytest.raises(SweepError, match="give the protocol too"):
        make_plan(TINY, [], bench / "x", settings=["MA->D"])
    with pytest.raises(SweepError, match="unknown"):
        make_plan(TINY, [], bench / "x", protocol="no-such-protocol")


def test_synth_loo_lists_only_the_leave_one_out_settings(bench):
    names = [s.name for s in get_protocol(f"synth-loo:{bench / 'data'}").settings]
    assert names == ["domain_1+domain_2->domain_0", "domain_0+domain_2->domain_1", "domain_0+domain_1->domain_2"]
    assert len(get_protocol(f"synth:{bench / 'data'}").settings) == 6 + 3


def test_setting_overrides_of_a_preset_carry_its_dataset_options():
    base = load_experiment(REPO / "configs" / "muva" / "base_vitb16.yaml")
    setting = get_protocol("muva-loo").setting("MA+D+MS->C3")
    ov = setting_overrides(base, setting)
    cfg = load_experiment(REPO / "configs" / "muva" / "base_vitb16.yaml", ov)
    assert cfg.data == setting_config(base, setting, Path("x")).data
    assert any(o.startswith("data.dataset_options=") for o in ov)


def test_paper_numbers_travel_with_settings_and_configs(tmp_path):
    assert published_results(["market1501"], ["dukemtmcreid"])["MUVA"] == (52.0, 72.1)
    assert published_results(["market"], ["duke"]) == published_results(["market1501"], ["dukemtmcreid"])  # aliases
    assert published_results(["synth:x"], ["synth:y"]) == {}
    own = make_plan(REPO / "configs" / "muva" / "market_to_duke.yaml", [], tmp_path / "a")
    assert own.paper == {"": {"MUVA": [52.0, 72.1], "best other": [49.5, 69.1]}}
    loo = make_plan(REPO / "configs" / "muva" / "base_vitb16.yaml", [], tmp_path / "b", protocol="muva-loo")
    assert loo.paper["D+MS+C3->MA"] == {"MUVA": [66.7, 86.1]} and len(loo.paper) == 4


# ----------------------------------------------------------------------------- grounding before a sweep
def test_missing_caches_stop_the_sweep_with_the_commands_and_ground_writes_them(bench):
    out = bench / "g"
    plan = make_plan(TINY, [f"grounding.dir={bench / 'gr'}", "grounding.expert=prior"], out,
                     variants={"parts": {}, "global": {"model.parts": []}}, protocol=f"synth-loo:{bench / 'data'}",
                     settings=["domain_1+domain_2->domain_0"])
    needed = grounding_needed(plan)
    assert [c.name for _, c, _ in needed] == ["prior.sqlite", "prior.sqlite"]  # two sources; the global model needs none
    assert all("--expert prior" in cmd and "--splits train" in cmd for _, _, cmd in needed)
    args = ["sweep", "-c", TINY, f"grounding.dir={bench / 'gr'}", "grounding.expert=prior", "--protocol",
            f"synth-loo:{bench / 'data'}", "--setting", "domain_1+domain_2->domain_0", "--out", out, "--no-progress"]
    res = muva(*args)
    assert res.returncode == 2 and "2 grounding cache(s)" in res.stderr and "--ground" in res.stderr
    assert "Traceback" not in res.stderr and not any(out.glob("*/*/seed*"))  # nothing was trained
    from muva.engine.sweep.runner import _ground

    _ground(plan, plan.runs, True)
    assert grounding_needed(plan) == [] and (out / "grounding.log").is_file()


def test_a_cache_lacking_a_part_the_model_needs_is_grounded_again(bench):
    from muva.grounding.experts import build_expert
    from muva.grounding.run import ground_images, resolve_images

    cache = bench / "three.sqlite"
    ground_images(resolve_images(str(bench / "data" / "domain_0"), splits=["train"]),
                  build_expert("prior", parts=("head", "upper_body", "legs")), cache, progress=False)
    spec = str(bench / "data" / "domain_0")
    common = [f"data.sources=[{spec}]", f"data.targets=[{bench / 'data' / 'domain_1'}]",
              f"grounding.caches={{{spec}: {cache}}}", "grounding.expert=prior"]
    fits = make_plan(TINY, [*common, "model.parts=[head,legs]"], bench / "p1")
    assert grounding_needed(fits) == []
    wider = make_plan(TINY, [*common, "model.parts=[head,upper_body,legs,shoes]"], bench / "p2")
    (got,) = grounding_needed(wider)
    assert got[1] == cache and "--parts head,upper_body,legs,shoes" in got[2]


# ----------------------------------------------------------------------------- aggregation
def _fake_run(folder: Path, target: str, rng, noise: float, masks: dict | None = None) -> dict:
    q, g = 24, 72
    qp, gp = rng.integers(0, 8, q), rng.integers(0, 8, g)
    qf = np.eye(8)[qp] + rng.normal(0, noise, (q, 8))
    gf = np.eye(8)[gp] + rng.normal(0, noise, (g, 8))
    res = evaluate(qf, gf, q_pids=qp, g_pids=gp, q_camids=np.zeros(q, int), g_camids=np.ones(g, int), max_rank=10)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"targets": [target], "rows": [{"method": "x", "results": {target: res.to_dict()}}]}))
    (folder / "config.yaml").write_text("{}\n")
    save_per_query(folder / "per_query.npz", {target: res})
    if masks is not None:
        (folder / MASK_IOU_FILE).write_text(json.dumps(masks))
    return res.to_dict()


def test_mean_over_targets_paper_and_mask_rows(bench, tmp_path):
    cfg = REPO / "configs" / "muva" / "base_vitb16.yaml"
    plan = make_plan(cfg, [], tmp_path, seeds=[1, 2, 3], variants={"muva": {}, "global": {"model.parts": []}},
                     protocol="muva-loo", settings=["D+MS+C3->MA", "MA+D+MS->C3"], reference="global")
    (tmp_path / PLAN_FILE).write_text(json.dumps(plan.to_json()))
    rng = np.random.default_rng(3)
    got = {}
    for run in plan.runs:
        target = run.setting.split("->")[1]
        doc = {"parts": ["head"], "source": {"predicted": {"head": 0.1 * run.seed}, "pseudo": {"head": 0.5}},
               "targets": {target: {"predicted": {"head": 0.05 * run.seed}}}} if run.variant == "muva" else None
        got[(run.variant, run.seed, run.setting)] = _fake_run(tmp_path / run.folder, target, rng,
                                                              0.6 if run.variant == "muva" else 1.2, doc)
    s = aggregate(tmp_path, n_boot=300, seed=1)
    mean_key = "mean (2 targets)"
    assert s.targets == ["D+MS+C3->MA", "MA+D+MS->C3", mean_key]
    for v in ("muva", "global"):
        per_seed = [np.mean([got[(v, sd, st)]["mAP"] for st in plan.settings]) for sd in (1, 2, 3)]
        row = next(r for r in s.rows if r["variant"] == v and r["target"] == mean_key and r["metric"] == "mAP")
        half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3)
        assert row["mean"] == pytest.approx(np.mean(per_seed))
        assert (row["seed_low"], row["seed_high"]) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half))
        assert row["boot_low"] <= row["mean"] <= row["boot_high"]  # both targets resampled on their own
    d = next(x for x in s.diffs if x["target"] == mean_key and x["metric"] == "mAP")
    assert d["diff"] == pytest.approx(np.mean([np.mean([got[("muva", sd, st)]["mAP"] - got[("global", sd, st)]["mAP"]
                                                        for st in plan.settings]) for sd in (1, 2, 3)]))
    # the paper's numbers: per setting, their mean for the mean row; drawn on the base variant only
    assert s.paper["D+MS+C3->MA"] == {"MUVA": [66.7, 86.1]}
    assert s.paper[mean_key]["MUVA"] == pytest.approx([np.mean([plan.paper[st]["MUVA"][i] for st in plan.settings])
                                                       for i in (0, 1)])
    base_row = next(r for r in s.rows if r["variant"] == "muva" and r["target"] == "D+MS+C3->MA" and r["metric"] == "mAP")
    other = next(r for r in s.rows if r["variant"] == "global" and r["target"] == "D+MS+C3->MA" and r["metric"] == "mAP")
    assert base_row["paper"] == pytest.approx(0.667) and other["paper"] is None
    md = s.markdown()
    assert "| paper: MUVA | – | 66.7 | 86.1 | – |" in md and f"### {mean_key}" in md
    # part masks: per seed the mean over its runs, then the interval over seeds
    pred = next(r for r in s.masks if r["kind"] == "predicted (training images)")
    assert pred["mean"] == pytest.approx(0.2) and pred["n_seeds"] == 3 and pred["variant"] == "muva"
    assert next(r for r in s.masks if r["kind"] == "pseudo (training images)")["mean"] == pytest.approx(0.5)
    assert next(r for r in s.masks if r["kind"] == "predicted (unseen target)")["mean"] == pytest.approx(0.1)
    assert "Part masks against the true parts" in md


def test_the_mean_paper_row_is_the_mean_of_the_settings(tmp_path):
    plan = make_plan(REPO / "configs" / "muva" / "base_vitb16.yaml", [], tmp_path, protocol="muva-loo")
    from muva.engine.sweep.aggregate import _paper

    targets = list(plan.settings)
    got = _paper(plan, targets, "mean (4 targets)")["mean (4 targets)"]["MUVA"]
    assert got == pytest.approx([np.mean([plan.paper[s]["MUVA"][i] for s in plan.settings]) for i in (0, 1)])


# ----------------------------------------------------------------------------- mask IoU
def test_patch_iou_on_known_masks():
    a = np.zeros((2, 2, 4), bool)
    b = np.zeros((2, 2, 4), bool)
    a[0, 0, :2] = True  # image 0, part 0: {0,1} vs {1,2} → 1/3
    b[0, 0, 1:3] = True
    a[1, 0, :] = b[1, 0, :] = True  # image 1, part 0: identical → 1
    a[0, 1, 0] = True  # part 1: image 0 disjoint → 0; image 1 empty both → left out
    b[0, 1, 3] = True
    iou = patch_iou(a, b, np.ones((2, 2), bool))
    assert iou == pytest.approx([(1 / 3 + 1) / 2, 0.0])
    hidden = np.array([[True, False], [True, True]])  # part 1 hidden in image 0: no image left → nan
    assert math.isnan(patch_iou(a, b, hidden)[1])


def test_true_parts_come_from_the_domain_folders(bench):
    train = sorted((bench / "data" / "domain_0" / "bounding_box_train").glob("*.jpg"))[:3]
    recs = true_part_records([str(p) for p in train])
    assert recs is not None and set(recs[str(train[0])].boxes) >= {"head", "upper_body", "legs"}
    assert true_part_records([str(train[0]), "/elsewhere/bounding_box_train/x.jpg"]) is None


# ----------------------------------------------------------------------------- end to end and the presets
def test_a_protocol_sweep_end_to_end_grounds_trains_and_reports(bench):
    out = bench / "e2e"
    res = muva("sweep", "-c", TINY, f"grounding.dir={bench / 'gr2'}", "grounding.expert=prior", "stage1.epochs=1",
               "stage2.epochs=1", "--protocol", f"synth-loo:{bench / 'data'}", "--out", out, "--ground", "--jobs", "2",
               "--no-progress", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted(out.glob("*/base/seed1234"))
    assert len(runs) == 3 and all((r / "results.json").is_file() for r in runs)
    doc = json.loads((runs[0] / MASK_IOU_FILE).read_text())  # synthetic sources: mask IoU against the true parts
    assert set(doc["source"]) == {"images", "predicted", "pseudo"} and len(doc["targets"]) == 1
    assert all(0.0 <= v <= 1.0 for v in doc["source"]["pseudo"].values() if v is not None)
    report = json.loads((out / "report" / "sweep_results.json").read_text())
    assert "mean (3 targets)" in report["targets"] and report["mask_iou"]
    assert "### mean (3 targets)" in res.stdout


@pytest.mark.parametrize("name", ["synth_sweep.yaml", "mini_mars_sweep.yaml"])
def test_the_study_presets_plan_seven_variants_and_three_seeds(name, bench, tmp_path, monkeypatch):
    spec = load_sweep_file(STUDY / name)
    assert set(spec["variants"]) == {"untrained", "global", "muva_prior", "muva_pose", "no_mask_loss", "no_part_prompts",
                                     "online_gating"}
    assert spec["seeds"] >= 3 and spec["reference"] == "global"
    kwargs = {}
    if "protocol" in spec:
        assert spec["protocol"].startswith("synth-loo:")
        kwargs["protocol"] = f"synth-loo:{bench / 'data'}"
    plan = make_plan(spec["config"], spec.get("overrides", []), tmp_path, seeds=spec["seeds"], variants=spec["variants"],
                     reference=spec["reference"], **kwargs)
    assert len(plan.runs) == 7 * spec["seeds"] * (3 if kwargs else 1)
    cfgs = {r.variant: plan.run_config(r) for r in plan.runs}
    assert cfgs["untrained"].stage1.enabled is False and cfgs["untrained"].stage2.enabled is False
    assert cfgs["global"].model.parts == [] and cfgs["global"].stage2.weights["triplet"] == 1.0
    assert cfgs["global"].stage2.weights["imp"] == 0.0 and cfgs["global"].stage1.loss == "supcon"
    assert cfgs["muva_pose"].grounding.expert == "pose" and cfgs["muva_prior"].grounding.expert == "prior"
    assert cfgs["no_mask_loss"].stage2.weights["mask"] == 0.0 and cfgs["no_part_prompts"].model.part_prompts is False
    assert cfgs["online_gating"].model.mask_gating == "online"
    same = {k for k, v in cfgs.items() if v.stage2.epochs == cfgs["muva_prior"].stage2.epochs}
    assert same == set(cfgs)  # equal training budget
