"""Build an open_clip CLIP model and load real CLIP weights into it.

Weight sources (``ModelConfig.pretrained``):

* an **open_clip pretrained tag** (``openai``, ``laion2b_s34b_b88k``, ...): downloaded
  with ``open_clip.create_model(name, pretrained=tag)`` where internet exists;
* a **local OpenAI checkpoint** (``ViT-B-16.pt`` as OpenAI publishes it: a TorchScript
  archive, or a plain state dict with OpenAI key names, fp16 allowed);
* a **local open_clip checkpoint** (a dict with ``state_dict``, keys optionally prefixed
  ``module.``; or a bare state dict / ``.safetensors`` file);
* ``none``: random initialisation.

When weights cannot be had (offline, missing file), :class:`WeightsUnavailableError`
names the file expected and the option to pass it, within about a second: an offline
setting or one short TCP connect (:func:`network_problem`) decides whether downloads can
happen; when they cannot, only the local caches serve and the hub makes no request.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP
from open_clip.model import resize_pos_embed as resize_clip_pos_embed
from open_clip.pretrained import get_pretrained_cfg
from safetensors.torch import load_file as load_safetensors

from muva.config import ConfigError
from muva.models.config import ModelConfig
from muva.utils.errors import MuvaError
from muva.utils.network import hub_offline, network_problem, offline_flag  # noqa: F401 - re-exported

log = logging.getLogger("muva.models")

__all__ = ["WeightsUnavailableError", "CheckpointMismatchError", "LoadReport", "resolve_clip_config", "build_clip",
           "read_clip_checkpoint", "load_clip_weights", "network_problem", "offline_flag", "hub_offline",
           "ensure_weights_obtainable"]

# Entries of OpenAI's state dict that are metadata, not weights.
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
# Keys of the text tower that open_clip's CustomTextCLIP stores under ``text.``.
_TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


class WeightsUnavailableError(MuvaError, RuntimeError):
    """Pretrained CLIP weights could not be obtained (offline, missing or unreadable file)."""


class CheckpointMismatchError(MuvaError, RuntimeError):
    """A checkpoint whose tensors do not fit the configured backbone."""


@dataclass
class LoadReport:
    """Where the CLIP weights came from."""

    source: str  # "tag", "file" or "none"
    format: str  # "open_clip-tag", "openai-torchscript", "openai-state-dict", "open_clip-checkpoint", "state-dict", "safetensors", "random"
    path: str | None = None
    quick_gelu: bool = True
    num_tensors: int = 0


# ----------------------------------------------------------------------------- architecture
def resolve_clip_config(cfg: ModelConfig, quick_gelu: bool) -> dict[str, Any]:
    """open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) with ``cfg.arch`` applied."""
    name = cfg.backbone_name
    base = open_clip.get_model_config(name)
    if base is None:
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-")][:20]
        raise ConfigError(f"unknown backbone {cfg.backbone!r}; open_clip ViT backbones include: {', '.join(vits)}")
    mc = copy.deepcopy(base)
    vision, text = mc["vision_cfg"], mc["text_cfg"]
    if "timm_model_name" in vision or not vision.get("patch_size"):
        raise ConfigError(f"backbone {name!r} is not an open_clip VisionTransformer; use a ViT backbone (ViT-B-16, ViT-B-32, ViT-L-14)")
    if "hf_model_name" in text:
        raise ConfigError(f"backbone {name!r} uses a Hugging Face text tower, which muva does not support")
    a = cfg.arch
    if a.embed_dim is not None:
        mc["embed_dim"] = a.embed_dim
    if a.vision_heads is not None:
        width = a.vision_width if a.vision_width is not None else vision["width"]
        if width % a.vision_heads:
            raise ConfigError(f"model.arch.vision_heads={a.vision_heads} does not divide the vision width {width}")
        vision["head_width"] = width // a.vision_heads
    for section, key, value in (
        (vision, "image_size", a.image_size), (vision, "patch_size", a.patch_size), (vision, "width", a.vision_width),
        (vision, "layers", a.vision_layers), (text, "width", a.text_width), (text, "layers", a.text_layers),
        (text, "heads", a.text_heads), (text, "context_length", a.context_length),
    ):
        if value is not None:
            section[key] = value
    mc.pop("custom_text", None)
    mc["quick_gelu"] = bool(quick_gelu)
    return mc


def _new_clip(cfg: ModelConfig, quick_gelu: bool) -> torch.nn.Module:
    mc = resolve_clip_config(cfg, quick_gelu)
    model = CLIP(**mc)
    return model.float()


# ----------------------------------------------------------------------------- reading files
def _unreadable(path: Path, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot read {path} as a CLIP checkpoint: {why}. Expected an OpenAI TorchScript archive / state dict "
        "(ViT-B-16.pt) or an open_clip checkpoint; if the file was copied, copy it again (compare its size with the original)."
    )


def read_clip_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a CLIP checkpoint file of any supported format → (state dict in CLIP key names, format)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"pretrained weights file not found: {path}. Pass an existing file with model.pretrained=/path/to/ViT-B-16.pt "
            "(OpenAI checkpoint or open_clip checkpoint), an open_clip tag such as 'openai', or 'none'."
        )
    fmt = "state-dict"
    if path.suffix == ".safetensors":
        from muva.models.io import weights_file_problem  # lazy: muva.models.io imports this module (cycle)

        problem = weights_file_problem(path)
        if problem:
            raise _unreadable(path, problem)
        try:
            obj: Any = load_safetensors(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
            raise _unreadable(path, f"corrupt ({str(exc)[:200]})") from exc
        fmt = "safetensors"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
                archive = torch.jit.load(str(path), map_location="cpu")
            obj = dict(archive.state_dict())
            fmt = "openai-torchscript"
        except (RuntimeError, ValueError, AttributeError):
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling problem becomes one message
                from muva.models.io import weights_file_problem  # lazy: muva.models.io imports this module (cycle)

                cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                raise _unreadable(path, f"{weights_file_problem(path) or 'unreadable'} ({cause})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
        fmt = "open_clip-checkpoint"
    if not isinstance(obj, dict) or not obj:
        raise WeightsUnavailableError(f"{path} holds no state dict (got {type(obj).__name__})")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k in sd for k in _OPENAI_EXTRAS) and fmt == "state-dict":
        fmt = "openai-state-dict"
    for k in _OPENAI_EXTRAS:
        sd.pop(k, None)
    for k in [k for k in sd if k == "attn_mask" or k.endswith(".attn_mask")]:  # causal masks, not weights
        sd.pop(k)
    if any(k.startswith("text.") for k in sd):  # open_clip CustomTextCLIP layout → CLIP layout
        sd = {(k[5:] if k.startswith("text.") and k[5:].split(".")[0] in _TEXT_KEYS else k): v for k, v in sd.items()}
    return sd, fmt


def load_clip_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, where: str = "checkpoint") -> int:
    """Copy ``state_dict`` (CLIP key names) into an open_clip ``CLIP`` model, strictly.

    fp16 tensors are cast to the model's dtype; the visual position embedding is resized
    (bicubic) when the checkpoint's grid differs. Returns the number of tensors loaded.
    """
    target = model.state_dict()
    sd = dict(state_dict)
    if "logit_scale" in sd and "logit_scale" in target and sd["logit_scale"].ndim != target["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(target["logit_scale"].shape)
    if "logit_bias" not in target:
        sd.pop("logit_bias", None)
    resize_clip_pos_embed(sd, model)
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:4])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:4])}")
        raise CheckpointMismatchError(
            f"{where} does not fit this backbone: " + "; ".join(parts) + ". Check model.backbone (and model.arch) against the checkpoint."
        )
    with torch.no_grad():
        for k, v in target.items():
            v.copy_(sd[k].to(dtype=v.dtype))
    return len(target)


def _unobtainable(name: str, spec: str, problem: str, cache_dir: str | None) -> WeightsUnavailableError:
    from muva.models.io import hub_cache_dir, hub_files, url_cache_file  # lazy: muva.models.io imports this module (cycle)

    pc = get_pretrained_cfg(name, spec.lower()) or {}
    looked, fixes = [], []
    if pc.get("hf_hub"):
        repo, names = hub_files(pc["hf_hub"])
        looked.append(f"{repo} ({' or '.join(names)}) in the Hugging Face cache {cache_dir or hub_cache_dir()}")
        fixes.append(f"on a machine with internet run `hf download {repo} {names[0]}` and copy its Hugging Face cache "
                     "folder here (HF_HOME, or model.cache_dir)")
    if pc.get("url"):
        looked.append(f"{os.path.basename(pc['url'])} in {url_cache_file(pc, cache_dir).parent}")
        fixes.append(f"download {pc['url']} and pass it with model.pretrained=/path/to/{os.path.basename(pc['url'])}")
    else:
        fixes.append(f"pass a local checkpoint with model.pretrained=/path/to/{name}.pt")
    fixes.append("use model.pretrained=none for random initialisation (smoke tests only: accuracy far below the paper's)")
    return WeightsUnavailableError(
        f"the CLIP weights model.pretrained='{spec}' of {name} are not in the local cache and {problem}, so they "
        f"cannot be downloaded. Looked for {' and '.join(looked)}. Fix: "
        + "; or ".join(f"({i}) {fix}" for i, fix in enumerate(fixes, 1)) + "."
    )


def ensure_weights_obtainable(cfg: ModelConfig) -> tuple[str, Path | None]:
    """Where ``cfg.pretrained``'s weights will come from; reads no tensor, fails fast when nowhere.

    ``("none", None)``, ``("file", path)``, ``("download", None)`` (network usable), or, when it is
    not, ``("hub-cache", path)`` / ``("url-cache", path)``.  Raises :class:`WeightsUnavailableError`
    (neither local nor downloadable) or :class:`~muva.config.ConfigError` (tag with ``model.arch``).
    """
    if not cfg.uses_pretrained:
        return "none", None
    from muva.models.io import cached_clip_file, uses_hub  # lazy: muva.models.io imports this module (cycle)

    name, spec = cfg.backbone_name, str(cfg.pretrained).strip()
    path = Path(spec).expanduser()
    if path.is_file():
        return "file", path
    pc = get_pretrained_cfg(name, spec.lower())
    if pc:
        if not cfg.arch.is_empty():
            raise ConfigError(f"model.arch overrides cannot be combined with the pretrained tag {spec!r}; use pretrained=none or a matching file")
        problem = network_problem(None if uses_hub(pc) else pc.get("url") or None)
        if problem is None:
            return "download", None
        found = cached_clip_file(name, spec.lower(), cfg.cache_dir)
        if found is None:
            raise _unobtainable(name, spec, problem, cfg.cache_dir)
        return f"{found[0]}-cache", found[1]
    tags = open_clip.list_pretrained_tags_by_model(name)
    if os.sep in spec or spec.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise WeightsUnavailableError(
            f"pretrained weights file not found: {path}. Expected an OpenAI checkpoint such as {name}.pt "
            f"({_expected_files(name, 'openai') if 'openai' in tags else 'OpenAI release'}) or an open_clip checkpoint; "
            "pass it with model.pretrained=/path/to/file, or use model.pretrained=none."
        )
    raise WeightsUnavailableError(
        f"model.pretrained={spec!r} is neither a file nor a pretrained tag of {name}. "
        f"Tags: {', '.join(tags) or '(none)'}; or pass a local file path, or 'none'."
    )


# ----------------------------------------------------------------------------- entry point
def _expected_files(name: str, tag: str) -> str:
    pc = get_pretrained_cfg(name, tag) or {}
    where = []
    if pc.get("url"):
        where.append(f"{os.path.basename(pc['url'])} from {pc['url']}")
    if pc.get("hf_hub"):
        hub = pc["hf_hub"].rstrip("/")
        where.append(f"open_clip_pytorch_model.bin from the Hugging Face repo {hub}")
    return " or ".join(where) or f"the {name} '{tag}' checkpoint"


def build_clip(cfg: ModelConfig, *, load_weights: bool = True) -> tuple[torch.nn.Module, LoadReport]:
    """Create the open_clip ``CLIP`` model named by ``cfg.backbone`` with the configured weights.

    ``load_weights=False`` builds the architecture only (used when a muva checkpoint will
    overwrite every tensor anyway).  Weights that are neither local nor downloadable raise
    :class:`WeightsUnavailableError` at once (see :func:`ensure_weights_obtainable`).
    """
    name = cfg.backbone_name
    spec = str(cfg.pretrained).strip()
    resolve_clip_config(cfg, True)  # unknown backbone / bad arch overrides fail here, before any download
    if not load_weights or not cfg.uses_pretrained:
        qg = True if cfg.quick_gelu is None else cfg.quick_gelu
        return _new_clip(cfg, qg), LoadReport("none", "random", quick_gelu=qg)

    kind, path = ensure_weights_obtainable(cfg)
    if kind in ("download", "hub-cache"):
        tag_cfg = get_pretrained_cfg(name, spec.lower())
        qg = bool(tag_cfg.get("quick_gelu", False)) if cfg.quick_gelu is None else cfg.quick_gelu
        try:
            with hub_offline() if kind == "hub-cache" else contextlib.nullcontext():
                model = open_clip.create_model(
                    name, pretrained=spec.lower(), precision="fp32", device="cpu", force_quick_gelu=qg, cache_dir=cfg.cache_dir
                )
        except Exception as exc:  # noqa: BLE001 - network/hub errors come in many types
            cause = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise WeightsUnavailableError(
                f"could not obtain the pretrained CLIP weights '{spec}' for {name}: "
                f"{'reading the cached file' if path else 'download'} failed ({cause}). "
                f"Expected file: {_expected_files(name, spec.lower())}. Download it on a machine with internet and pass it with "
                f"model.pretrained=/path/to/{name}.pt, or use model.pretrained=none for random weights."
            ) from exc
        n = sum(1 for _ in model.state_dict())
        return model.float(), LoadReport("tag", "open_clip-tag", path=str(path) if path else None, quick_gelu=qg, num_tensors=n)

    assert path is not None  # "file" or "url-cache": a checkpoint file to read ourselves
    sd, fmt = read_clip_checkpoint(path)
    qg = cfg.quick_gelu if cfg.quick_gelu is not None else fmt.startswith("openai")
    model = _new_clip(cfg, qg)
    n = load_clip_weights(model, sd, where=str(path))
    log.info("loaded %d CLIP tensors from %s (%s)", n, path, fmt)
    return model, LoadReport("file", fmt, path=str(path), quick_gelu=qg, num_tensors=n)
