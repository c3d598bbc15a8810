"""Two CPU processes with gloo (torchrun) match the single-process run of the same config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import TINY, make_tiny_data, tiny_overrides


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _losses(run_dir: Path, term: str = "total"):
    from muva.engine.logging import read_metrics

    out: dict = {}
    for rec in read_metrics(run_dir / "metrics.jsonl"):
        if "loss/total" in rec:
            key = (rec["stage"], rec["step"])
            assert key not in out, f"step {key} logged twice: only rank 0 may write"
            out[key] = rec.get(f"loss/{term}")
    return out


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    data = make_tiny_data(tmp_path)
    extra = ("stage1.epochs=2", "stage2.epochs=2", "eval.every=0", "data.batch_size=16", "stage1.batch_size=16")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    single = tmp_path / "single"
    cmd = [sys.executable, "-m", "muva", "train", "-c", str(TINY), "--quiet", *tiny_overrides(data, single, *extra)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "muva", "train", "-c", str(TINY), "--quiet", *tiny_overrides(data, ddp, *extra)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(single), _losses(ddp)
    assert set(a) == set(b)
    s1 = [k for k in a if k[0] == "stage1"]
    assert s1
    for k in s1:  # stage 1 has no batch-dependent layers: the same numbers up to float reduction order
        assert b[k] == pytest.approx(a[k], rel=1e-4), k
    s2 = sorted(k for k in a if k[0] == "stage2")
    first = s2[0]
    # first stage-2 step, same weights: the terms computed before the BN neck agree exactly ...
    for term in ("i2t", "mask"):
        assert _losses(ddp, term)[first] == pytest.approx(_losses(single, term)[first], rel=1e-4), term
    # ... the BN-neck terms (id, cluster memory at T = 0.01) see per-process BatchNorm statistics
    # (no SyncBatchNorm on CPU), so the totals are only close
    assert b[first] == pytest.approx(a[first], rel=0.2)
    assert sum(b[k] for k in s2) == pytest.approx(sum(a[k] for k in s2), rel=0.2)
    for name in ("model.safetensors", "results.json", "last.pt"):
        assert (ddp / name).is_file()
    import json

    ra = json.loads((single / "results.json").read_text())["rows"][0]["results"]
    rb = json.loads((ddp / "results.json").read_text())["rows"][0]["results"]
    (t,) = ra
    assert rb[t]["num_queries"] == ra[t]["num_queries"]  # every query gathered to rank 0
    assert abs(rb[t]["mAP"] - ra[t]["mAP"]) < 0.15


def test_an_error_under_several_processes_is_printed_once_without_tracebacks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}
    cmd = [sys.executable, "-m", "muva", "train", "--nproc-per-node", "2", "-c", str(TINY),
           f"data.sources=[{tmp_path / 'missing'}]", f"output.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("error:") == 1 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
