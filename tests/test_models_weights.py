"""CLIP weight loading (every format, made here from random tensors) and muva save/load."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from muva.config import ConfigError
from muva.models import (
    CheckpointMismatchError,
    ModelConfig,
    ModelFileError,
    WeightsUnavailableError,
    build_model,
    load_model,
    read_model_info,
    save_model,
    tiny_config,
)
from muva.models.clip_loading import _new_clip, build_clip, read_clip_checkpoint
from muva.models.vit import resize_pos_embed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference():
    """A random tiny CLIP in OpenAI key names (fp16 like OpenAI's release) and its tensors."""
    torch.manual_seed(123)
    clip = _new_clip(tiny_config(), quick_gelu=True)
    with torch.no_grad():
        for p in clip.parameters():
            p.normal_(0, 0.05)
    sd = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    return clip, sd


def _openai_extras():
    return {"input_resolution": torch.tensor(64), "context_length": torch.tensor(32), "vocab_size": torch.tensor(49408)}


def write_openai_torchscript(clip, path):
    holder = _new_clip(tiny_config(), quick_gelu=True)
    holder.load_state_dict(clip.state_dict())
    holder = holder.half()
    for k, v in _openai_extras().items():  # OpenAI's archive carries these as tensors
        if k in holder.__dict__:
            delattr(holder, k)
        holder.register_buffer(k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(holder), str(path))


def write_openai_state_dict(sd, path):
    torch.save({**{k: v.half() for k, v in sd.items()}, **_openai_extras()}, path)


def write_open_clip_checkpoint(sd, path):
    torch.save({"epoch": 32, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)


def write_safetensors(sd, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


WRITERS = {
    "openai-torchscript": ("ViT-B-16.pt", lambda clip, sd, p: write_openai_torchscript(clip, p)),
    "openai-state-dict": ("openai_sd.pt", lambda clip, sd, p: write_openai_state_dict(sd, p)),
    "open_clip-checkpoint": ("epoch_32.pt", lambda clip, sd, p: write_open_clip_checkpoint(sd, p)),
    "safetensors": ("open_clip_model.safetensors", lambda clip, sd, p: write_safetensors(sd, p)),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_clip_checkpoint_round_trip(fmt, reference, tmp_path):
    clip, sd = reference
    name, write = WRITERS[fmt]
    path = tmp_path / name
    write(clip, sd, path)
    read, got_fmt = read_clip_checkpoint(path)
    assert got_fmt == fmt
    assert set(read) == set(sd)
    loaded, report = build_clip(tiny_config(pretrained=str(path)))
    assert report.format == fmt and report.source == "file" and report.num_tensors == len(sd)
    fp16 = fmt.startswith("openai")
    for k, v in loaded.state_dict().items():
        want = sd[k].half().float() if fp16 else sd[k]
        assert torch.equal(v, want), k
    # through build_model: tensors land in the MUVA model, the position embedding resized from 4×4 to 8×4
    m = build_model(tiny_config(pretrained=str(path)), num_classes=2)
    cast = (lambda t: t.half().float()) if fp16 else (lambda t: t)
    assert torch.equal(m.visual.vit.conv1.weight, cast(sd["visual.conv1.weight"]))
    assert torch.equal(m.visual.vit.transformer.resblocks[1].attn.in_proj_weight, cast(sd["visual.transformer.resblocks.1.attn.in_proj_weight"]))
    assert torch.equal(m.text.token_embedding.weight, cast(sd["token_embedding.weight"]))
    assert torch.equal(m.text.text_projection, cast(sd["text_projection"]))
    torch.testing.assert_close(m.visual.vit.positional_embedding.detach(), resize_pos_embed(cast(sd["visual.positional_embedding"]), (4, 4), (8, 4)))
    # quick_gelu auto: OpenAI weights were trained with QuickGELU, other checkpoints default to GELU
    auto, rep = build_clip(tiny_config(pretrained=str(path), quick_gelu=None))
    assert rep.quick_gelu is fmt.startswith("openai")
    act = type(auto.visual.transformer.resblocks[0].mlp.gelu).__name__
    assert act == ("QuickGELU" if fmt.startswith("openai") else "GELU")


def test_open_clip_custom_text_layout_is_accepted(reference, tmp_path):
    _, sd = reference
    text_keys = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    custom = {(f"text.{k}" if k.split(".")[0] in text_keys else k): v for k, v in sd.items()}
    torch.save(custom, tmp_path / "custom.pt")
    loaded, _ = build_clip(tiny_config(pretrained=str(tmp_path / "custom.pt")))
    assert torch.equal(loaded.token_embedding.weight, sd["token_embedding.weight"])


def test_mismatched_checkpoint_names_the_problem(reference, tmp_path):
    _, sd = reference
    torch.save(sd, tmp_path / "tiny.pt")
    cfg = tiny_config(pretrained=str(tmp_path / "tiny.pt"))
    cfg.arch.vision_width = 128
    cfg.arch.vision_heads = 2
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch.*checkpoint \(64,\) vs model \(128,\).*model.backbone"):
        build_clip(cfg)
    bad = dict(sd)
    bad.pop("ln_final.weight")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match="missing.*ln_final.weight"):
        build_clip(tiny_config(pretrained=str(tmp_path / "bad.pt")))


def test_missing_file_and_unknown_tag_are_clear(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"not found: .*nope\.pt.*model\.pretrained="):
        build_clip(tiny_config(pretrained=str(tmp_path / "nope.pt")))
    with pytest.raises(WeightsUnavailableError, match="neither a file nor a pretrained tag.*openai"):
        build_clip(tiny_config(pretrained="openaii"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        build_clip(tiny_config(pretrained=str(tmp_path / "junk.pt")))
    with pytest.raises(ValueError, match="arch overrides"):
        build_clip(tiny_config(pretrained="openai"))


def test_pretrained_tag_offline_gives_one_clear_error(tmp_path):
    """open_clip.create_model(pretrained='openai') with no network: our message names the file and the option."""
    code = (
        "from muva.models import ModelConfig\n"
        "from muva.models.clip_loading import build_clip, WeightsUnavailableError\n"
        f"cfg = ModelConfig(pretrained='openai', cache_dir={str(tmp_path)!r})\n"
        "try:\n    build_clip(cfg)\nexcept WeightsUnavailableError as e:\n    print('MSG:', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    msg = res.stdout
    assert "MSG:" in msg, res.stderr[-2000:]
    assert "ViT-B-16.pt" in msg and "model.pretrained=" in msg and "HF_HUB_OFFLINE=1" in msg


# ----------------------------------------------------------------------------- muva save / load
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model(tiny_config(sie=True, num_cameras=3), num_classes=6)
    with torch.no_grad():  # make BN statistics and prompts non-trivial
        m.train()
        m(torch.randn(8, 3, 128, 64), camids=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
        m.prompts.ctx.normal_()
    m.eval()
    path = save_model(m, tmp_path_factory.mktemp("model") / "model.safetensors", extra={"epoch": 3})
    return m, path


def test_save_writes_safetensors_and_json(trained):
    m, path = trained
    assert path.suffix == ".safetensors" and path.is_file()
    info = read_model_info(path)
    assert info.num_classes == 6 and info.parts == ("head", "upper_body", "legs")
    assert info.grid == (8, 4) and info.dim == 128 and info.extra == {"epoch": 3}
    assert info.config.num_cameras == 3 and info.config.sie is True


def test_load_with_identities_restores_everything(trained):
    m, path = trained
    x = torch.randn(2, 3, 128, 64)
    back = load_model(path, num_classes=6)
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    torch.testing.assert_close(back.extract(x), m.extract(x))
    torch.testing.assert_close(back.text_features(progress=False), m.text_features(progress=False))
    assert not back.training


def test_load_for_inference_skips_identity_tensors(trained, caplog):
    m, path = trained
    x = torch.randn(2, 3, 128, 64)
    with caplog.at_level(logging.WARNING, logger="muva.models"):
        inf = load_model(path.with_suffix(".json"))  # the .json names the model too
    assert "prompts.ctx" in caplog.text and "classifier.fc.weight" in caplog.text
    assert inf.prompts is None and inf.classifier is None
    torch.testing.assert_close(inf.extract(x), m.extract(x))
    _, masks_a = inf.extract(x, return_masks=True)
    _, masks_b = m.extract(x, return_masks=True)
    torch.testing.assert_close(masks_a[-1], masks_b[-1])


def test_load_with_other_identity_count_builds_fresh_heads(trained, caplog):
    m, path = trained
    with caplog.at_level(logging.WARNING, logger="muva.models"):
        other = load_model(path.parent, num_classes=9)  # a directory holding model.safetensors works too
    assert "9 identities requested, 6 saved" in caplog.text
    assert other.classifier.fc.weight.shape == (9, 128) and other.prompts.ctx.shape[0] == 9
    assert torch.equal(other.visual.part_tokens, m.visual.part_tokens)


def test_save_without_text_tower(trained, tmp_path):
    m, _ = trained
    path = save_model(m, tmp_path / "small.safetensors", include_text=False)
    full = tmp_path / "full.safetensors"
    save_model(m, full)
    assert path.stat().st_size < full.stat().st_size / 2
    back = load_model(path)
    x = torch.randn(1, 3, 128, 64)
    torch.testing.assert_close(back.extract(x), m.extract(x))


def test_load_file_with_mask_predictor_key_biases(trained, tmp_path):
    """Files saved before the mask predictors' key bias was dropped still load, with the same outputs."""
    import shutil

    from safetensors.torch import load_file, save_file

    m, path = trained
    state = load_file(str(path))
    for i in range(m.num_layers):
        state[f"visual.mask_predictors.{i}.k_proj.bias"] = torch.randn(m.visual.width)  # cancelled by the softmax
    old = tmp_path / "model.safetensors"
    save_file(state, str(old))
    shutil.copy(path.with_suffix(".json"), old.with_suffix(".json"))
    x = torch.randn(2, 3, 128, 64)
    torch.testing.assert_close(load_model(old).extract(x), m.extract(x))


def test_load_errors(tmp_path, trained):
    with pytest.raises(ModelFileError, match="save_model"):
        load_model(tmp_path / "missing.safetensors")
    m, path = trained
    (tmp_path / "m.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "m.json")


# ----------------------------------------------------------------------------- offline: caches, flags, corrupt files
NET_VARS = ("MUVA_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture
def no_network(monkeypatch):
    """No offline flag, the hub endpoint refuses connections (nothing listens on port 9), probes forgotten."""
    from muva.models import clip_loading
    from muva.utils import network

    for var in NET_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(network, "_PROBES", {})
    return clip_loading


def fake_hub_cache(cache: Path, repo: str, filename: str, data: bytes) -> Path:
    """A file laid out as huggingface_hub caches it (refs/main → snapshots/<commit>/<file>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_offline_flags_and_the_network_probe(no_network, monkeypatch):
    clip_loading = no_network
    assert clip_loading.offline_flag() is None
    calls = []
    from muva.utils import network

    real = network.socket.create_connection
    monkeypatch.setattr(network.socket, "create_connection", lambda *a, **k: calls.append(a) or real(*a, **k))
    problem = clip_loading.network_problem()
    assert problem == "the network is unreachable (127.0.0.1 did not answer within 1.5 s)"
    assert clip_loading.network_problem() == problem and len(calls) == 1  # probed once per process
    for var in ("MUVA_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
        assert clip_loading.network_problem() == f"offline mode is set ({var}=1)"
        monkeypatch.delenv(var)
    monkeypatch.setenv("MUVA_OFFLINE", "0")
    assert clip_loading.offline_flag() is None


def test_tag_without_network_fails_at_once_naming_the_fixes(no_network, tmp_path):
    import time

    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_clip(ModelConfig(pretrained="openai", cache_dir=str(tmp_path / "hub")))
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "model.pretrained='openai' of ViT-B-16 are not in the local cache" in msg
    assert "the network is unreachable (127.0.0.1" in msg
    assert f"timm/vit_base_patch16_clip_224.openai (open_clip_model.safetensors or open_clip_pytorch_model.bin) in the Hugging Face cache {tmp_path / 'hub'}" in msg
    assert "model.pretrained=/path/to/ViT-B-16.pt" in msg and "model.pretrained=none" in msg
    with pytest.raises(ConfigError, match="arch overrides"):  # a config error comes before any network question
        build_clip(tiny_config(pretrained="openai"))


def test_cached_tag_is_found_and_loaded_without_the_hub(no_network, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub
    import open_clip

    from muva.models.clip_loading import ensure_weights_obtainable
    from muva.models.io import cached_clip_file

    cache = tmp_path / "hub"
    assert cached_clip_file("ViT-B-16", "openai", str(cache)) is None
    path = fake_hub_cache(cache, "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors", b"weights")
    assert cached_clip_file("ViT-B-16", "openai", str(cache)) == ("hub", path)
    cfg = ModelConfig(pretrained="openai", cache_dir=str(cache))
    assert ensure_weights_obtainable(cfg) == ("hub-cache", path)
    seen = {}

    def create_model(name, pretrained, **kw):  # open_clip's loader, reduced to what build_clip relies on
        seen.update(name=name, pretrained=pretrained, offline=hub.HF_HUB_OFFLINE, env=os.environ.get("HF_HUB_OFFLINE"))
        return _new_clip(tiny_config(), quick_gelu=True)

    monkeypatch.setattr(open_clip, "create_model", create_model)
    before = hub.HF_HUB_OFFLINE
    _, report = build_clip(cfg)
    assert seen == {"name": "ViT-B-16", "pretrained": "openai", "offline": True, "env": "1"}
    assert report.source == "tag" and report.path == str(path)
    assert hub.HF_HUB_OFFLINE == before and "HF_HUB_OFFLINE" not in os.environ  # restored afterwards
    # OpenAI's release file in open_clip's URL download folder counts too
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-B-16.pt").write_bytes(b"x")
    assert cached_clip_file("ViT-B-16", "openai", str(tmp_path / "clip")) == ("url", tmp_path / "clip" / "ViT-B-16.pt")


def test_truncated_or_corrupt_clip_files_are_named(reference, tmp_path):
    from muva.models.io import weights_file_problem

    clip, sd = reference
    write_safetensors(sd, tmp_path / "clip.safetensors")
    data = (tmp_path / "clip.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsUnavailableError, match=r"cannot read .*cut\.safetensors as a CLIP checkpoint: truncated.*copy it again"):
        build_clip(tiny_config(pretrained=str(tmp_path / "cut.safetensors")))
    write_openai_state_dict(sd, tmp_path / "ViT-B-16.pt")
    assert weights_file_problem(tmp_path / "ViT-B-16.pt") is None
    pt = (tmp_path / "ViT-B-16.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(pt[: len(pt) // 2])
    assert weights_file_problem(tmp_path / "cut.pt").startswith("truncated or corrupt: its zip directory is unreadable")
    with pytest.raises(WeightsUnavailableError, match=r"cut\.pt as a CLIP checkpoint: truncated or corrupt"):
        build_clip(tiny_config(pretrained=str(tmp_path / "cut.pt")))
