"""Sweeps end to end: a tiny 2-variant × 2-seed sweep, resume after a killed run, refusals,
and aggregation on hand-made result files with known means and intervals."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_train import make_tiny_data, tiny_overrides

from muva.engine.sweep.aggregate import aggregate
from muva.engine.sweep.plan import PLAN_FILE, SweepError, make_plan
from muva.engine.sweep.runner import run_states
from muva.evaluation import evaluate, save_per_query

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def muva(*args, cwd=None, timeout=600):
    env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished tiny sweep: global (no parts) vs MUVA parts, 2 seeds, one epoch per stage."""
    root = tmp_path_factory.mktemp("sweep")
    data = make_tiny_data(root)
    base = [o for o in tiny_overrides(data, root / "unused") if not o.startswith("output.dir=")]
    args = ["sweep", "-c", TINY, *base, "stage1.epochs=1", "stage2.epochs=1", "--seeds", "2",
            "--vary", "model.parts=[],[head,upper_body,legs]", "--reference", "parts=[]", "--out", root / "sw",
            "--jobs", "2", "--no-progress"]
    res = muva(*args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {"root": root, "out": root / "sw", "args": args, "first": res, "base": [*base, "stage1.epochs=1"]}


def test_tiny_sweep_runs_every_variant_and_seed(swept):
    out = swept["out"]
    plan = json.loads((out / PLAN_FILE).read_text())
    assert [r["folder"] for r in plan["runs"]] == ["parts=none/seed1234", "parts=none/seed1235",
                                                  "parts=head+upper_body+legs/seed1234", "parts=head+upper_body+legs/seed1235"]
    for r in plan["runs"]:
        folder = out / r["folder"]
        assert (folder / "results.json").is_file() and (folder / "per_query.npz").is_file()
        assert (folder / "sweep.log").is_file()
    import yaml

    cfg = yaml.safe_load((out / "parts=none/seed1235/config.yaml").read_text())
    assert cfg["seed"] == 1235 and cfg["model"]["parts"] == []
    for name in ("sweep_results.md", "sweep_results.csv", "sweep_results.json", "mAP.png", "diff_mAP.png"):
        assert (out / "report" / name).is_file(), name
    assert "Difference to parts=[]" in swept["first"].stdout


def test_report_numbers_are_the_runs(swept):
    out = swept["out"]
    summary = aggregate(out)
    per_seed = [json.loads((out / f"parts=none/seed{s}/results.json").read_text())["rows"][0]["results"] for s in (1234, 1235)]
    target = summary.targets[0]
    values = [r[target]["mAP"] for r in per_seed]
    row = next(r for r in summary.rows if r["variant"] == "parts=[]" and r["metric"] == "mAP")
    half = stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / math.sqrt(2)
    assert row["mean"] == pytest.approx(np.mean(values)) and row["seed_high"] == pytest.approx(np.mean(values) + half)
    assert row["boot_low"] <= row["mean"] <= row["boot_high"]
    written = json.loads((out / "report" / "sweep_results.json").read_text())
    assert written["reference"] == "parts=[]" and len(written["rows"]) == 2 * 3


def test_a_second_call_skips_finished_runs(swept):
    res = muva(*swept["args"])
    assert res.returncode == 0, res.stderr
    assert "finished in" not in res.stdout  # nothing trained again
    assert "│ 2    │ 0" in res.stdout.replace("┃", "│")


def test_a_killed_run_resumes_from_its_checkpoint(swept, tmp_path):
    """A run that stopped after its last checkpoint (no results yet) is continued, not redone."""
    out = tmp_path / "sw"
    shutil.copytree(swept["out"], out)
    plan_path = out / PLAN_FILE
    plan = json.loads(plan_path.read_text())
    plan["out"] = str(out)
    for r in plan["runs"]:
        r["overrides"] = [o if not o.startswith("output.dir=") else f"output.dir={out / r['folder']}" for o in r["overrides"]]
    plan_path.write_text(json.dumps(plan))
    run = out / "parts=head+upper_body+legs/seed1235"
    before = json.loads((run / "results.json").read_text())
    for name in ("results.json", "results.md", "results.csv", "results_cmc.csv", "per_query.npz", "model.safetensors"):
        (run / name).unlink()
    (out / "parts=none/seed1234/results.json").unlink()
    shutil.rmtree(out / "parts=none/seed1234")  # killed before its first checkpoint: trained again
    (out / "parts=none/seed1234").mkdir()
    (out / "parts=none/seed1234/metrics.jsonl").write_text('{"stage": "stage1", "step": 1}\n')
    args = [a if a != swept["out"] else out for a in swept["args"]]
    res = muva(*args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stdout.count("finished in") == 2
    after = json.loads((run / "results.json").read_text())["rows"][0]["results"]
    for target, res in before["rows"][0]["results"].items():  # the same model: the same numbers (timings aside)
        assert {k: after[target][k] for k in ("mAP", "rank1", "mINP", "cmc")} == {k: res[k] for k in ("mAP", "rank1", "mINP", "cmc")}
    assert "resumed" in (run / "sweep.log").read_text() or "resum" in (run / "sweep.log").read_text().lower()
    fresh = out / "parts=none/seed1234"
    assert (fresh / "results.json").is_file()
    assert '"step": 1}\n' not in (fresh / "metrics.jsonl").read_text().splitlines()[0]


def test_a_changed_config_is_refused(swept):
    from muva.engine.sweep.runner import run_sweep

    changed = make_plan(TINY, [*swept["base"], "stage2.epochs=2"], swept["out"], seeds=2,
                        vary=["model.parts=[],[head,upper_body,legs]"])
    states = run_states(changed)
    assert {s.status for s in states} == {"stale"}
    assert all("stage2.epochs: 1 → 2" in s.diff for s in states)
    with pytest.raises(SweepError, match="holds a sweep of config"):
        run_sweep(changed, progress=False)


# ----------------------------------------------------------------------------- hand-made result files
def _fake_run(folder: Path, target: str, rng, shift: float) -> dict:
    """A finished run folder with real per-query results from a synthetic ranking problem."""
    q, g = 30, 90
    qp, gp = rng.integers(0, 10, q), rng.integers(0, 10, g)
    qf = np.eye(10)[qp] + rng.normal(0, 1.0 - shift, (q, 10))
    gf = np.eye(10)[gp] + rng.normal(0, 1.0 - shift, (g, 10))
    res = evaluate(qf, gf, q_pids=qp, g_pids=gp, q_camids=np.zeros(q, int), g_camids=np.ones(g, int), max_rank=20)
    folder.mkdir(parents=True)
    row = {"method": "x", "results": {target: res.to_dict()}}
    (folder / "results.json").write_text(json.dumps({"targets": [target], "rows": [row]}))
    (folder / "config.yaml").write_text("{}\n")
    save_per_query(folder / "per_query.npz", {target: res})
    return res.to_dict()


def test_aggregation_of_hand_made_runs(tmp_path):
    plan = make_plan(TINY, [], tmp_path, seeds=[1, 2, 3], variants={"a": {}, "b": {"stage2.epochs": 2}}, reference="a")
    (tmp_path / PLAN_FILE).write_text(json.dumps(plan.to_json()))
    rng = np.random.default_rng(0)
    got = {(v, s): _fake_run(tmp_path / f"{v}/seed{s}", "toy", rng, 0.3 if v == "b" else 0.0)
           for v in ("a", "b") for s in (1, 2, 3)}
    summary = aggregate(tmp_path, n_boot=200, seed=5)
    for v in ("a", "b"):
        vals = [got[(v, s)]["rank1"] for s in (1, 2, 3)]
        row = next(r for r in summary.rows if r["variant"] == v and r["metric"] == "rank1")
        half = stats.t.ppf(0.975, 2) * np.std(vals, ddof=1) / math.sqrt(3)
        assert row["mean"] == pytest.approx(np.mean(vals))
        assert (row["seed_low"], row["seed_high"]) == pytest.approx((np.mean(vals) - half, np.mean(vals) + half))
        assert row["n_seeds"] == 3 and row["values"] == pytest.approx(vals)
    d = next(x for x in summary.diffs if x["metric"] == "mAP")
    diffs = [got[("b", s)]["mAP"] - got[("a", s)]["mAP"] for s in (1, 2, 3)]
    assert d["diff"] == pytest.approx(np.mean(diffs)) and d["low"] <= min(d["seed_low"], d["boot_low"])
    again = aggregate(tmp_path, n_boot=200, seed=5)
    assert again.rows == summary.rows  # the bootstrap is deterministic for a fixed seed
    assert "| b | 3 |" in summary.markdown() and "Difference to a" in summary.markdown()
    # a run without results is reported as missing and left out
    shutil.rmtree(tmp_path / "b/seed3")
    part = aggregate(tmp_path, n_boot=50)
    assert part.missing == ["b/seed3"] and next(r for r in part.rows if r["variant"] == "b")["n_seeds"] == 2


def test_ctrl_c_stops_the_runs_and_the_same_command_resumes(tmp_path):
    """SIGINT to the sweep: its training saves last.pt and stops, exit 130 with the resume hint; the rerun finishes."""
    import signal
    import time

    data = make_tiny_data(tmp_path)
    base = [o for o in tiny_overrides(data, tmp_path / "unused") if not o.startswith("output.dir=")]
    args = [sys.executable, "-m", "muva", "sweep", "-c", str(TINY), *base, "stage1.epochs=1", "stage2.epochs=4",
            "--out", str(tmp_path / "sw"), "--no-progress", "--no-report"]
    env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    run = tmp_path / "sw" / "base" / "seed1234"
    deadline = time.time() + 240
    while time.time() < deadline and not any("stage2" in line for line in _lines(run / "metrics.jsonl")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "Resume with the same muva sweep command" in err and "Traceback" not in err
    assert (run / "last.pt").is_file() and not (run / "results.json").exists()
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (run / "results.json").is_file() and "resumed stage 2" in (run / "sweep.log").read_text()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
