"""One run per folder, resumes that fit, Ctrl-C that saves: `muva train` never loses or mixes runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from test_train import TINY, _losses, make_tiny_data, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("hygiene"))


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}


def muva(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "muva", *args], capture_output=True, text=True, env=_env(), timeout=600)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _steps(run_dir: Path) -> Counter:
    from muva.engine.logging import read_metrics

    return Counter((r["stage"], r.get("step"), "loss/total" in r) for r in read_metrics(run_dir / "metrics.jsonl"))


def test_sigint_saves_at_a_step_and_resume_is_bit_identical_without_duplicate_steps(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment
    from muva.engine.trainer import Hook
    from muva.utils.errors import RunInterrupted

    extra = ("stage1.epochs=1", "stage2.epochs=3", "eval.every=0", "output.log_every=1")
    ref_dir = tmp_path / "ref"
    Experiment(load_experiment(TINY, tiny_overrides(tiny_data, ref_dir, *extra)), quiet=True).run()
    ref = _losses(ref_dir)

    class CtrlC(Hook):
        def after_step(self, trainer, losses):
            if trainer.name == "stage2" and trainer.global_iter == 5:
                signal.raise_signal(signal.SIGINT)  # as a terminal's Ctrl-C: the handler only records it

    run_dir = tmp_path / "run"
    cfg = load_experiment(TINY, tiny_overrides(tiny_data, run_dir, *extra))
    with pytest.raises(RunInterrupted, match=r"Resume with: muva train -c .*config.yaml --resume") as info:
        Experiment(cfg, quiet=True, hooks=[CtrlC()]).run()
    assert "SIGINT" in str(info.value)
    from muva.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "last.pt")
    assert state["trainer"]["stage"] == "stage2" and state["trainer"]["global_iter"] == 5  # the step it was in
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    # a record written after the save (as a killed run may leave) must not survive the resume
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"stage": "stage2", "epoch": 2, "iter": 3, "step": 6, "loss/total": -1.0}) + "\n")
    Experiment(cfg, resume=True, quiet=True).run()
    got = _losses(run_dir)
    assert got == ref  # bit-identical on CPU, every step present
    dup = [k for k, n in _steps(run_dir).items() if n > 1]
    assert dup == [], dup


def test_training_into_a_run_folder_needs_resume_or_overwrite(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    over = tiny_overrides(tiny_data, run_dir, "stage1.epochs=1", "stage2.epochs=1", "eval.every=0")
    first = muva("train", "-c", str(TINY), *over)
    assert first.returncode == 0, first.stderr
    before = (run_dir / "metrics.jsonl").read_text()
    again = muva("train", "-c", str(TINY), *over)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    msg = _flat(again.stderr)
    assert "already holds a run" in msg and "--resume" in msg and "--overwrite" in msg
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing touched
    (run_dir / "stale_note.txt").write_text("left by hand")
    fresh = muva("train", "-c", str(TINY), *over, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert not (run_dir / "stale_note.txt").exists()  # a clean folder
    assert max(_steps(run_dir).values()) == 1


def test_resume_with_a_changed_config_names_the_keys(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    over = tiny_overrides(tiny_data, run_dir, "stage1.epochs=1", "stage2.epochs=1", "eval.every=0")
    assert muva("train", "-c", str(TINY), *over).returncode == 0
    r = muva("train", "-c", str(TINY), *over, "stage2.optim.lr=0.002", "model.parts=[head,legs]", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    msg = _flat(r.stderr)
    assert "cannot resume" in msg and "stage2.optim.lr" in msg and "model.parts" in msg
    ok = muva("train", "-c", str(run_dir / "config.yaml"), "--resume", "output.progress=false")
    assert ok.returncode == 0, ok.stderr  # the run's own config (and a harmless change) resumes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_exits_130_with_the_resume_command(tiny_data, tmp_path, sig):
    run_dir = tmp_path / "run"
    over = tiny_overrides(tiny_data, run_dir, "stage1.epochs=1", "stage2.epochs=8", "eval.every=0", "output.log_every=1")
    proc = subprocess.Popen([sys.executable, "-m", "muva", "train", "-c", str(TINY), *over], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and '"stage": "stage2"' in metrics.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"({sig.name})" in err
    assert err.count("stopped:") == 1, err  # one message, not the stop and a generic Ctrl-C line
    assert f"Resume with: muva train -c {run_dir / 'config.yaml'} --resume" in _flat(err)
    r = muva("train", "-c", str(run_dir / "config.yaml"), "--resume")
    assert r.returncode == 0, r.stderr
    assert [k for k, n in _steps(run_dir).items() if n > 1] == []
    steps = sorted(s for (stage, s, is_loss) in _steps(run_dir) if stage == "stage2" and is_loss)
    assert steps == list(range(1, len(steps) + 1))  # every step once, none missing


def test_target_selected_best_is_opt_in_and_labelled(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.evaluate import evaluate_checkpoint
    from muva.engine.run import Experiment

    run_dir = tmp_path / "run"
    cfg = load_experiment(TINY, tiny_overrides(tiny_data, run_dir, "stage1.epochs=1", "stage2.epochs=2", "eval.every=1",
                                               "eval.keep_best=true"))
    Experiment(cfg, quiet=True).run()
    assert (run_dir / "best.pt").is_file()
    _, notes = evaluate_checkpoint(cfg, run_dir / "best.pt", quiet=True)
    assert any("selected on the target test set" in n and "not a domain-generalisation result" in n for n in notes)
    _, notes = evaluate_checkpoint(cfg, run_dir / "last.pt", quiet=True)
    assert not any("selected on" in n for n in notes)
    results = json.loads((run_dir / "results.json").read_text())
    history = json.loads((run_dir / "eval_history.json").read_text())
    last = history[-1]
    target = next(iter(results["rows"][0]["results"]))
    assert last["epoch"] == 2  # results.* report the last epoch, whatever best.pt holds
    assert results["rows"][0]["results"][target]["mAP"] * 100 == pytest.approx(last[f"eval/{target}/mAP"])


def test_eval_from_the_model_file_alone_uses_the_runs_config_and_the_files_model(tiny_data, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.run import Experiment

    run_dir = tmp_path / "run"
    Experiment(load_experiment(TINY, tiny_overrides(tiny_data, run_dir, "stage1.epochs=1", "stage2.epochs=1",
                                                    "eval.every=0")), quiet=True).run()
    r = muva("eval", str(run_dir / "model.safetensors"))  # no -c, no --target: the run's config.yaml
    assert r.returncode == 0, r.stderr
    assert "the run's config" in _flat(r.stderr)
    got = json.loads((run_dir / "eval_results.json").read_text())["rows"][0]["results"]
    ref = json.loads((run_dir / "results.json").read_text())["rows"][0]["results"]
    assert set(got) == set(ref)
    t = next(iter(ref))
    assert got[t]["mAP"] == pytest.approx(ref[t]["mAP"], abs=1e-6)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"_base_: {TINY}\nmodel:\n  parts: [head]\n")
    r = muva("eval", str(run_dir / "model.safetensors"), "-c", str(wrong), "-t", tiny_data["target"])
    assert r.returncode == 0, r.stderr
    note = _flat(r.stderr)
    assert "model section differs from the model file's" in note and "parts:" in note
    got2 = json.loads((run_dir / "eval_results.json").read_text())["rows"][0]["results"]
    assert got2[t]["mAP"] == pytest.approx(ref[t]["mAP"], abs=1e-6)  # the file's three parts were used


def test_a_run_that_fails_while_setting_up_leaves_the_folder_free(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    over = tiny_overrides(tiny_data, run_dir, "stage1.epochs=1", "stage2.epochs=1", "eval.every=0")
    bad = muva("train", "-c", str(TINY), *over, f"grounding.caches={{{tiny_data['source']}: {tmp_path}/none.sqlite}}")
    assert bad.returncode == 2 and "muva ground" in _flat(bad.stderr) and "Traceback" not in bad.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())
    assert muva("train", "-c", str(TINY), *over).returncode == 0  # the retry needs neither --resume nor --overwrite


def test_written_files_get_the_usual_permissions_not_owner_only(tmp_path):
    from muva.utils.io import atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "results.md", "| a |\n")
        assert path.stat().st_mode & 0o777 == 0o644  # as open() would give; mkstemp alone gives 0600
    finally:
        os.umask(mask)
