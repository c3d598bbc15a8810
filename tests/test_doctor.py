"""``muva doctor``: a good config passes; a missing dataset, cache or weights file FAILs with its check named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import make_market

REPO = Path(__file__).resolve().parents[1]
NET_VARS = ("MUVA_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A tiny Market-layout dataset, its prior grounding cache, and a tiny experiment config using both."""
    from muva.grounding.experts import build_expert
    from muva.grounding.run import ground_images, resolve_images

    base = tmp_path_factory.mktemp("doctor")
    data = make_market(base / "mk", ids=3, cams=2)
    cache = base / "caches" / "mk_prior.sqlite"
    ground_images(resolve_images(str(data)), build_expert("prior"), cache, workers=1, progress=False)
    config = base / "exp.yaml"
    config.write_text(f"_base_: {REPO / 'configs' / 'tiny.yaml'}\n"
                      f"data: {{sources: [{data}], targets: [{data}], grounding: {{{data}: {cache}}}}}\n"
                      f"output: {{dir: {base / 'run'}}}\n")
    return {"base": base, "data": data, "cache": cache, "config": config}


@pytest.fixture
def offline(monkeypatch):
    """No offline flag; the hub endpoint refuses connections (nothing listens on 127.0.0.1:9)."""
    from muva.models import clip_loading
    from muva.utils import network

    for var in NET_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "muva-doctor-empty-hf"))
    monkeypatch.setattr(network, "_PROBES", {})


def checks(setup, *overrides: str) -> dict:
    from muva.engine.config import load_experiment
    from muva.engine.doctor import run_checks

    return {c.check: c for c in run_checks(load_experiment(setup["config"], list(overrides)))}


def doctor_cli(setup, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in NET_VARS}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "muva", "doctor", "-c", str(setup["config"]), *args],
                          capture_output=True, text=True, env=env, cwd=setup["base"], timeout=300)


def test_good_config_passes(setup):
    res = doctor_cli(setup, "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    rows = {r["check"]: r for r in json.loads(res.stdout)}
    data = str(setup["data"])
    assert [rows[k]["status"] for k in (f"source {data}", "sources combined", f"target {data}", f"grounding {data}",
                                        "CLIP weights", "model", "disk space", "output folder")] == ["ok"] * 8
    assert rows["sources combined"]["detail"] == "3 identities, 12 images, 2 cameras"
    assert rows[f"target {data}"]["detail"] == "mk: 6 query, 12 gallery images"
    assert rows[f"grounding {data}"]["detail"] == f"{setup['cache']} (prior) covers all 12 training images"
    assert rows["output folder"]["detail"].endswith("does not exist yet (training creates it)")
    assert {r["status"] for r in rows.values()} <= {"ok", "warn"}
    table = doctor_cli(setup)  # the human-readable table
    assert table.returncode == 0 and "muva doctor" in table.stdout and "0 FAIL" in table.stdout, table.stdout[-2000:]


def test_missing_dataset_fails_and_exits_1(setup, tmp_path):
    nope = tmp_path / "nope"
    res = doctor_cli(setup, f"data.sources=[{nope}]")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stdout.splitlines() if f"source {nope}" in line]
    assert len(lines) == 1 and "FAIL" in lines[0], res.stdout[-3000:]
    assert "1 FAIL — fix the FAIL rows before training" in res.stdout
    row = checks(setup, f"data.sources=[{nope}]")[f"source {nope}"]
    assert row.status == "FAIL" and str(nope) in row.detail
    assert checks(setup, f"data.sources=[{nope}]")["grounding"].status == "warn"  # not checked without sources


def test_missing_target_fails(setup, tmp_path):
    row = checks(setup, f"data.targets=[{tmp_path / 'gone'}]")[f"target {tmp_path / 'gone'}"]
    assert row.status == "FAIL" and "gone" in row.detail


def test_missing_or_partial_grounding_cache_fails(setup, tmp_path):
    data = str(setup["data"])
    row = checks(setup, f"grounding.caches={{{data}: {tmp_path / 'none.sqlite'}}}")[f"grounding {data}"]
    assert row.status == "FAIL"
    assert row.detail == (f"grounding cache {tmp_path / 'none.sqlite'} does not exist; create it with "
                          f"`muva ground run {data} --expert pose --out {tmp_path / 'none.sqlite'} --splits train`")
    # a cache that covers only 5 of the 12 training images
    from muva.grounding.experts import build_expert
    from muva.grounding.run import ground_images, resolve_images

    partial = tmp_path / "partial.sqlite"
    ground_images(resolve_images(data, splits=["train"]), build_expert("prior"), partial, workers=1, limit=5, progress=False)
    got = checks(setup, f"grounding.caches={{{data}: {partial}}}", "grounding.missing=error")[f"grounding {data}"]
    assert got.status == "FAIL" and got.detail.startswith("7 of 12 training images have no usable entry")
    assert "grounding.missing=prior or skip" in got.detail
    got = checks(setup, f"grounding.caches={{{data}: {partial}}}", "grounding.missing=prior")[f"grounding {data}"]
    assert got.status == "warn" and got.detail.endswith("they use the body prior (grounding.missing=prior)")
    # a global model needs no cache at all
    assert checks(setup, "model.parts=[]", f"grounding.caches={{{data}: {tmp_path / 'none.sqlite'}}}")["grounding"].status == "ok"


def test_missing_weights_fail(setup, tmp_path, offline):
    row = checks(setup, f"model.pretrained={tmp_path / 'ViT-B-16.pt'}")["CLIP weights"]
    assert row.status == "FAIL" and "pretrained weights file not found" in row.detail and "ViT-B-16.pt" in row.detail
    row = checks(setup, "model.pretrained=openai", "model.arch={}")["CLIP weights"]
    assert row.status == "FAIL"
    assert "model.pretrained='openai' of ViT-B-16 are not in the local cache and the network is unreachable" in row.detail
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 cut short")
    row = checks(setup, f"model.pretrained={tmp_path / 'cut.pt'}")["CLIP weights"]
    assert row.status == "FAIL" and "truncated or corrupt" in row.detail


def test_weights_file_is_checked_without_loading_it(setup, tmp_path, monkeypatch):
    import torch

    from muva.models import clip_loading
    from muva.utils import network
    from muva.models.clip_loading import _new_clip
    from muva.models.config import tiny_config

    path = tmp_path / "clip.pt"
    torch.save(_new_clip(tiny_config(), True).state_dict(), path)

    def refuse(*a, **k):
        raise AssertionError("doctor must not read the weights")

    monkeypatch.setattr(clip_loading, "read_clip_checkpoint", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    row = checks(setup, f"model.pretrained={path}")["CLIP weights"]
    assert row.status == "ok" and row.detail.startswith(f"local file: {path}") and "header readable" in row.detail


def test_output_folder_states(setup, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert checks(setup, f"output.dir={run}")["output folder"].detail == f"{run} is empty"
    (run / "config.yaml").write_text("name: x\n")
    row = checks(setup, f"output.dir={run}")["output folder"]
    assert row.status == "warn" and "--resume" in row.detail and "--overwrite" in row.detail
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    row = checks(setup, f"output.dir={tmp_path / 'other'}")["output folder"]
    assert row.status == "FAIL" and "holds no muva run (notes.txt)" in row.detail


def test_device_cuda_without_gpu_fails(setup):
    import torch

    if torch.cuda.is_available():
        row = checks(setup, "device=cuda", "amp=fp16")["device"]
        assert row.status in ("ok", "warn") and row.detail.startswith("cuda:0 ")
    else:
        row = checks(setup, "device=cuda")["device"]
        assert row.status == "FAIL" and "no CUDA GPU is visible" in row.detail
    row = checks(setup, "device=cpu", "amp=fp16")["device"]
    assert row.status == "warn" and row.detail == "cpu (device=cpu); amp=fp16 is ignored on the CPU"


def test_device_checks_against_a_gpu(setup, monkeypatch):
    """The GPU branch, with torch.cuda answering as a 1-GPU machine without bf16 and 1 GiB free would."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Test GPU")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (1024**3, 80 * 1024**3))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    row = checks(setup, "device=auto", "amp=fp16")["device"]
    assert row.status == "warn" and row.detail.startswith("cuda:0 Test GPU, 1.0 GiB free of 80.0 GiB, amp=fp16; only 1.0 GiB")
    row = checks(setup, "device=cuda", "amp=bf16")["device"]
    assert "amp=bf16 is not supported by this GPU: use amp=fp16" in row.detail
    row = checks(setup, "device=cuda:3")["device"]
    assert row.status == "FAIL" and row.detail == "device=cuda:3 but only 1 GPU(s) are visible (cuda:0..cuda:0)"
    assert checks(setup, "device=auto")["memory"].detail.endswith("(host side)")


def test_compile_toolchain_check(setup, monkeypatch):
    assert "compile" not in checks(setup)  # only with compile=true
    row = checks(setup, "device=cpu", "compile=true")["compile"]
    from muva.models.compile import CompileError, check_compile_toolchain

    try:
        check_compile_toolchain("cpu")
    except CompileError:
        assert row.status == "FAIL"
    else:
        assert row.status == "ok" and row.detail.startswith("torch.compile (mode default) has its toolchain on the cpu")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("muva.models.compile.shutil.which", lambda name: None)
    row = checks(setup, "device=cpu", "compile=true")["compile"]
    assert row.status == "FAIL" and "needs a C++ compiler" in row.detail and "compile=false" in row.detail


def test_train_with_compile_and_no_compiler_is_one_error_line(setup, tmp_path):
    """PATH without a C++ compiler: `muva train compile=true` stops before any work, with one line."""
    env = {k: v for k, v in os.environ.items() if k not in NET_VARS and k != "CXX"}
    env.update(PATH=str(tmp_path), COLUMNS="200")
    res = subprocess.run([sys.executable, "-m", "muva", "train", "-c", str(setup["config"]), "compile=true",
                          f"output.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr + res.stdout
    assert "compile=true on CPU needs a C++ compiler" in res.stderr + res.stdout
