"""Sweep planning: grid expansion and names, named variants, sweep files, seeds, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from muva.engine.sweep.plan import (SweepError, SweepPlan, grid_variants, load_sweep_file, make_plan, parse_vary,
                                    split_values)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def muva(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("text, values", [
    ("0,1", ["0", "1"]),
    ("[],[head,upper_body,legs]", ["[]", "[head,upper_body,legs]"]),
    ("{a: 1, b: 2},x", ["{a: 1, b: 2}", "x"]),
    ("'a,b',c", ["'a,b'", "c"]),
])
def test_values_split_at_top_level_commas(text, values):
    assert split_values(text) == values


@pytest.mark.parametrize("text, message", [("[a,b", "unbalanced"), ("0,,1", "empty value"), ("'a", "unbalanced")])
def test_bad_value_lists(text, message):
    with pytest.raises(SweepError, match=message):
        split_values(text)


def test_grid_is_the_cartesian_product_with_readable_names():
    variants = grid_variants([parse_vary("model.parts=[],[head,upper_body,legs]"), parse_vary("stage2.weights.mask=0,1")])
    assert [v.name for v in variants] == ["parts=[] mask=0", "parts=[] mask=1",
                                          "parts=[head,upper_body,legs] mask=0", "parts=[head,upper_body,legs] mask=1"]
    assert variants[2].overrides == ("model.parts=[head,upper_body,legs]", "stage2.weights.mask=0")
    assert [v.folder for v in variants] == ["parts=none__mask=0", "parts=none__mask=1",
                                            "parts=head+upper_body+legs__mask=0", "parts=head+upper_body+legs__mask=1"]
    # the same last key part twice: the full keys name the variants
    both = grid_variants([parse_vary("stage1.epochs=1"), parse_vary("stage2.epochs=2")])
    assert both[0].name == "stage1.epochs=1 stage2.epochs=2"
    assert grid_variants([])[0].name == "base"


def test_plan_runs_seeds_and_folders(tmp_path):
    plan = make_plan(TINY, ["stage2.epochs=1"], tmp_path / "sw", seeds=3, vary=["stage2.weights.mask=0,1"])
    assert plan.seeds == [1234, 1235, 1236] and len(plan.runs) == 6
    run = plan.runs[4]
    assert run.variant == "mask=1" and run.seed == 1235 and run.folder == "mask=1/seed1235"
    assert run.overrides == ("stage2.epochs=1", "stage2.weights.mask=1", "seed=1235", f"output.dir={tmp_path / 'sw' / 'mask=1/seed1235'}")
    cfg = plan.run_config(run)
    assert cfg.seed == 1235 and cfg.stage2.weights["mask"] == 1.0 and cfg.output.dir == str(tmp_path / "sw" / run.folder)
    again = SweepPlan.from_json(plan.to_json())
    assert again.runs == plan.runs and again.variants == plan.variants


def test_named_variants_and_reference_from_a_file(tmp_path):
    f = tmp_path / "study.yaml"
    f.write_text(f"config: {os.path.relpath(TINY, tmp_path)}\noverrides: [stage2.epochs=1]\nseeds: [7, 9]\n"
                 "variants:\n  global: {model.parts: [], stage2.weights.mask: 0}\n  muva: {}\n"
                 "  short: ['stage2.epochs=2']\nreference: global\n")
    spec = load_sweep_file(f)
    plan = make_plan(spec["config"], spec["overrides"], tmp_path / "out", seeds=spec["seeds"], variants=spec["variants"],
                     reference=spec["reference"])
    assert [v.name for v in plan.variants] == ["global", "muva", "short"] and plan.seeds == [7, 9] and plan.reference == "global"
    assert plan.variant("short").overrides == ("stage2.epochs=2",) and plan.variant("muva").overrides == ()
    assert plan.variant("global").overrides == ("model.parts=[]", "stage2.weights.mask=0")


def test_a_mapping_value_of_a_named_variant_reaches_the_config(tmp_path):
    plan = make_plan(TINY, [], tmp_path, variants={"w": {"stage2.weights": {"id": 0.25, "triplet": 1}},
                                                    "p": {"model.parts": ["head", "legs"]}})
    assert plan.variant("p").overrides == ("model.parts=[head,legs]",)
    weights = plan.run_config(next(r for r in plan.runs if r.variant == "w")).stage2.weights
    assert weights["id"] == 0.25 and weights["triplet"] == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"vary": ["stage2.weights.mask"]}, "must look like KEY=V1,V2"),
    ({"vary": ["stage2.nope=1,2"]}, "unknown config key 'stage2.nope'"),
    ({"vary": ["seed=1", "seed=2"]}, "names a key twice"),
    ({"vary": ["stage2.weights.mask=0,1"], "variants": {"a": []}}, "not both"),
    ({"vary": ["stage2.weights.mask=0,1"], "reference": "mask=2"}, "reference 'mask=2' is not a variant"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"variants": {"a": "model.parts=[]"}}, "give a mapping KEY: VALUE or a list"),
])
def test_plans_that_are_refused(tmp_path, kwargs, message):
    with pytest.raises(SweepError, match=message):
        make_plan(TINY, [], tmp_path, **kwargs)


def test_unknown_sweep_file_key(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("config: x.yaml\nseed: 3\n")
    with pytest.raises(SweepError, match="unknown sweep key.*seed.*valid keys"):
        load_sweep_file(f)


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    res = muva("sweep", "-c", TINY, "stage2.epochs=1", "--seeds", "2", "--vary", "stage2.weights.mask=0,1",
               "--out", tmp_path / "sw", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "2 variant(s) × 2 seed(s)" in res.stdout
    assert "todo     mask=0/seed1234: muva train -c" in res.stdout and "seed=1235" in res.stdout
    assert not (tmp_path / "sw").exists()


def test_cli_errors_are_one_line(tmp_path):
    res = muva("sweep", "-c", TINY, "--vary", "stage2.nope=1", "--out", tmp_path, "--dry-run")
    assert res.returncode == 2 and "unknown config key 'stage2.nope'" in res.stderr and "Traceback" not in res.stderr
    res = muva("sweep", "report", tmp_path)
    assert res.returncode == 2 and "holds no sweep.json" in res.stderr and "Traceback" not in res.stderr
    res = muva("sweep", "--seeds", "2")
    assert res.returncode == 2 and "give the experiment config" in res.stderr
