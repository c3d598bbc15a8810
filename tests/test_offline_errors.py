"""No network, corrupt files: one clear message and exit code 2 from the CLI, at once, never a traceback.

The hub endpoint is pointed at 127.0.0.1:9 (nothing listens there: connections are refused),
so the tests behave the same with or without internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _helpers import make_market, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
NET_VARS = ("MUVA_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def offline_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NET_VARS}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "xdg"), MUVA_RUNS=str(tmp_path / "runs"), COLUMNS="200")
    env.update(extra)
    return env


def muva(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True,
                         env=offline_env(tmp_path, **env), cwd=tmp_path, timeout=300)
    return res, time.monotonic() - t0


def flat(text: str) -> str:
    """Error text with rich's line wrapping undone."""
    return " ".join(text.split())


def assert_one_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    err = flat(res.stderr)
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Retrying in" not in res.stderr, res.stderr[-3000:]
    assert err.count("error:") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return make_market(tmp_path_factory.mktemp("data") / "mk", ids=3, cams=2)


# ----------------------------------------------------------------------------- no network
def test_train_without_clip_weights_stops_at_once(tmp_path, market):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs' / 'tiny.yaml'}\n"
                   f"data: {{sources: [{market}], targets: [{market}], grounding_expert: prior}}\n"
                   f"output: {{dir: {tmp_path / 'run'}}}\n")
    res, seconds = muva(tmp_path, "train", "-c", cfg, "model.pretrained=openai", "model.arch={}")
    assert_one_error(res, "model.pretrained='openai' of ViT-B-16 are not in the local cache",
                     "the network is unreachable (127.0.0.1 did not answer within 1.5 s)",
                     "hf download timm/vit_base_patch16_clip_224.openai", "model.pretrained=/path/to/ViT-B-16.pt",
                     "model.pretrained=none")
    assert seconds < 60, seconds  # the hub's retries took about 50 s on their own


def test_offline_setting_is_honoured_by_train(tmp_path, market):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs' / 'tiny.yaml'}\n"
                   f"data: {{sources: [{market}], targets: [{market}]}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    res, _ = muva(tmp_path, "train", "-c", cfg, "model.pretrained=laion2b_s34b_b88k", "model.arch={}", MUVA_OFFLINE="1")
    assert_one_error(res, "model.pretrained='laion2b_s34b_b88k'", "offline mode is set (MUVA_OFFLINE=1)",
                     "laion/CLIP-ViT-B-16-laion2B-s34B-b88K")


def test_mllm_expert_without_the_model_stops_at_once(tmp_path, market):
    res, seconds = muva(tmp_path, "ground", "run", market, "-e", "mllm", "--model", "Qwen/Qwen2.5-VL-7B-Instruct",
                        "--out", tmp_path / "g.sqlite")
    assert_one_error(res, "Qwen/Qwen2.5-VL-7B-Instruct is not in the local Hugging Face cache",
                     "the network is unreachable", "hf download Qwen/Qwen2.5-VL-7B-Instruct",
                     "-X model=/path/to/folder", "-e pose or -e prior")
    assert seconds < 60, seconds  # the hub's retries took about 140 s
    assert not (tmp_path / "g.sqlite").exists()


def test_mllm_offline_flag_and_missing_folder(tmp_path, monkeypatch):
    from muva.grounding.experts import mllm
    from muva.utils import network

    for var in NET_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(mllm.MLLMError, match=r"model .*nowhere: no model folder there \(expected a folder holding config\.json"):
        mllm.MLLMExpert(model=str(tmp_path / "nowhere"), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert mllm.network_problem() == "offline mode is set (HF_HUB_OFFLINE=1)"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(network, "_PROBES", {})
    assert mllm.network_problem() == "the network is unreachable (127.0.0.1 did not answer within 1.5 s)"


# ----------------------------------------------------------------------------- corrupt model files
@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict:
    """A real tiny model (save_model) and broken copies: truncated, header overwritten, a few bytes only."""
    folder = tmp_path_factory.mktemp("models")
    good = tiny_checkpoint(folder / "good" / "model.safetensors")
    data = good.read_bytes()
    meta = good.with_suffix(".json").read_text()
    out = {"good": good}
    for name, content in (("truncated", data[: len(data) - 1000]), ("header", data[:8] + b"#" * 16 + data[24:]),
                          ("stub", data[:5])):
        path = folder / name / "model.safetensors"
        path.parent.mkdir()
        path.write_bytes(content)
        path.with_suffix(".json").write_text(meta)
        out[name] = path
    return out


def test_load_model_names_what_is_wrong(model_files):
    from muva.models import ModelFileError, load_model

    assert load_model(model_files["good"]).num_parts == 3
    size = model_files["good"].stat().st_size
    cases = {
        "truncated": rf"truncated: size mismatch, the header describes {size:,} bytes but the file has {size - 1000:,}",
        "header": "corrupt: the header is unreadable",
        "stub": "truncated: 5 byte",
    }
    for name, why in cases.items():
        with pytest.raises(ModelFileError, match=rf"{model_files[name]} is not a readable model file: {why}.*copy it again"):
            load_model(model_files[name])
    bad_json = model_files["good"].parent.parent / "badjson"
    bad_json.mkdir()
    (bad_json / "model.safetensors").write_bytes(model_files["good"].read_bytes())
    (bad_json / "model.json").write_text('{"format": "muva-model", "conf')
    with pytest.raises(ModelFileError, match=r"model\.json is not a readable model file: the JSON description is unreadable"):
        load_model(bad_json)


def test_cli_commands_report_a_truncated_model(tmp_path, market, model_files):
    bad = model_files["truncated"]
    why = f"{bad} is not a readable model file: truncated"
    res, _ = muva(tmp_path, "extract", bad, market, "-o", tmp_path / "feats")
    assert_one_error(res, why, "copy it again")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs' / 'tiny.yaml'}\ndata: {{sources: [{market}], targets: [{market}]}}\n")
    res, _ = muva(tmp_path, "eval", "-c", cfg, "--checkpoint", bad)
    assert_one_error(res, why)
    image = next((market / "query").iterdir())
    res, _ = muva(tmp_path, "viz", "masks", model_files["header"], image, "--out", tmp_path / "viz")
    assert_one_error(res, f"{model_files['header']} is not a readable model file: corrupt: the header is unreadable")
    clip = tmp_path / "clip.safetensors"
    clip.write_bytes(bad.read_bytes())  # any safetensors file cut short: the CLIP loader says so too
    res, _ = muva(tmp_path, "model", "info", "--preset", "tiny", "--weights", f"pretrained={clip}")
    assert_one_error(res, f"cannot read {clip} as a CLIP checkpoint: truncated")


# ----------------------------------------------------------------------------- corrupt feature files
@pytest.fixture
def feature_folder(tmp_path) -> Path:
    from muva.utils.featurefiles import FeatureSet

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(10, 8)).astype(np.float32)
    fs = FeatureSet(feats / np.linalg.norm(feats, axis=1, keepdims=True), [f"{i}.jpg" for i in range(10)],
                    pids=[i % 3 for i in range(10)], camids=[i % 2 for i in range(10)],
                    splits=["query"] * 4 + ["gallery"] * 6)
    return fs.save(tmp_path / "feats", shard_size=4)


def test_load_features_names_the_broken_shard(feature_folder):
    from muva.utils.featurefiles import FeatureFileError, load_features

    assert len(load_features(feature_folder)) == 10
    shard = feature_folder / "features-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-9])
    with pytest.raises(FeatureFileError, match=rf"{shard} is not a readable feature file: truncated: size mismatch.*--overwrite"):
        load_features(feature_folder)
    shard.unlink()
    with pytest.raises(FeatureFileError, match=r"features-00001\.safetensors is missing \(listed in .*features\.json\)"):
        load_features(feature_folder)
    (feature_folder / "features.json").write_text('{"format": "muva-feat')
    with pytest.raises(FeatureFileError, match=r"features\.json is unreadable .*the manifest is truncated or corrupt"):
        load_features(feature_folder)
    single = feature_folder.parent / "single.safetensors"
    single.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(FeatureFileError, match="single.safetensors is not a readable feature file: truncated or corrupt"):
        load_features(single)


def test_evaluate_features_cli_reports_a_truncated_shard(tmp_path, feature_folder):
    shard = feature_folder / "features-00000.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:8] + b"\xff" * 12 + data[20:])
    res, _ = muva(tmp_path, "evaluate-features", feature_folder, feature_folder)
    assert_one_error(res, f"{shard} is not a readable feature file: corrupt: the header is unreadable")


def test_training_with_unobtainable_weights_fails_before_reading_data_and_leaves_no_run(tmp_path):
    """The paper presets name pretrained=openai: offline, one message within seconds, nothing written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "muva", "train", "-c", str(REPO / "configs" / "muva" / "market_to_duke.yaml"),
                        f"data.root={tmp_path / 'no-data'}", f"output.dir={run_dir}", "device=cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Retrying" not in r.stderr
    assert "offline mode is set (HF_HUB_OFFLINE=1)" in " ".join(r.stderr.split())
    assert not run_dir.exists() or not any(run_dir.iterdir())
    assert "does not exist" not in r.stderr  # the weights were checked before the (missing) data
