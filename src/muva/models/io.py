"""Save and load trained MUVA models: ``model.safetensors`` + ``model.json`` (config, identities).

    save_model(model, "runs/x/model.safetensors")   # writes model.safetensors + model.json
    model = load_model("runs/x/model.safetensors")  # inference: prompts/classifier skipped
    info = read_model_info("runs/x/model.safetensors")  # the ModelInfo of model.json, no weights read

``path`` may name the ``.safetensors`` file, the ``.json`` file, or a directory holding
``model.safetensors``.  Loading with ``num_classes=None`` (inference on another dataset)
skips the identity-dependent tensors (``prompts.ctx``, ``classifier.fc.weight``) and
says so; loading with the saved identity count restores everything.  ``model.json`` is
the :class:`~muva.models.meta.ModelInfo` of the model (:meth:`~muva.models.meta.ModelInfo.to_saved`).

A truncated or corrupt file is a :class:`ModelFileError` naming the file and what is wrong
(:func:`safetensors_problem` reads only the header and the size).  The module also checks
CLIP weight files the same way (:func:`weights_file_problem`) and finds CLIP weights that
open_clip already downloaded (:func:`cached_clip_file`), without reading any tensor.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file as read_safetensors, save as safetensors_bytes

from muva.models.meta import FORMAT, ModelInfo
from muva.models.muva import IDENTITY_KEYS, MuvaModel, build_model
from muva.utils.errors import MuvaError
from muva.utils.io import atomic_write, atomic_write_text
from muva.utils.tensorfiles import safetensors_problem  # re-exported

__all__ = ["save_model", "load_model", "model_paths", "read_model_info", "ModelFileError",
           "safetensors_problem", "weights_file_problem", "cached_clip_file"]

log = logging.getLogger("muva.models")


class ModelFileError(MuvaError, RuntimeError):
    """A model file that is missing, incomplete or not a muva model."""


# ----------------------------------------------------------------------------- file checks
def weights_file_problem(path: str | Path) -> str | None:
    """Why a local weights file cannot be read, judged from its header only; None when it looks sound."""
    path = Path(path).expanduser()
    if not path.is_file():
        return "not found"
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if head[:2] == b"PK":  # torch.save / TorchScript archives are zip files with their directory at the end
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"truncated or corrupt: its zip directory is unreadable ({exc})"
        return None if names else "an empty archive"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return None
    return "not a checkpoint (neither a torch archive, a pickle nor a .safetensors file)"


def _corrupt(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(
        f"{path} is not a readable model file: {problem}. It was probably cut short while being copied or written: "
        "copy it again (compare its size with the original), or re-export it from the run's checkpoint "
        "(muva.models.save_model on the model of last.pt)."
    )


# ----------------------------------------------------------------------------- CLIP weights in the caches
def hub_files(hub: str) -> tuple[str, list[str]]:
    """(repo id, file names in open_clip's order of preference) of an open_clip ``hf_hub`` entry."""
    repo, filename = os.path.split(hub)  # 'org/name/' names the default file
    filename = filename or "open_clip_pytorch_model.bin"
    names = [filename]
    if filename.endswith((".bin", ".pth")):
        stem = "open_clip_model" if filename == "open_clip_pytorch_model.bin" else os.path.splitext(filename)[0]
        names.insert(0, stem + ".safetensors")
    return repo, names


def uses_hub(pc: dict) -> bool:
    """Whether open_clip takes this pretrained config from the Hugging Face hub (else from its URL)."""
    return bool(pc.get("hf_hub")) and importlib.util.find_spec("huggingface_hub") is not None


def hub_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE  # optional: present when open_clip uses the hub (uses_hub)

    return str(HF_HUB_CACHE)


def url_cache_file(pc: dict, cache_dir: str | None) -> Path:
    """Where open_clip keeps a file it downloaded from a URL."""
    return Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(pc["url"])


def cached_clip_file(name: str, tag: str, cache_dir: str | None = None) -> tuple[str, Path] | None:
    """The weights of an open_clip tag already on disk: ``("hub", path)`` in the Hugging Face cache,
    ``("url", path)`` for the release file in open_clip's download folder, or None."""
    from open_clip.pretrained import get_pretrained_cfg  # slow to import, and only this look-up needs it

    pc = get_pretrained_cfg(name, tag) or {}
    if uses_hub(pc):
        from huggingface_hub import try_to_load_from_cache  # optional: uses_hub says it is installed

        repo, names = hub_files(pc["hf_hub"])
        for filename in names:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return "hub", Path(found)
    if pc.get("url") and url_cache_file(pc, cache_dir).is_file():
        return "url", url_cache_file(pc, cache_dir)
    return None


# ----------------------------------------------------------------------------- muva model files
def model_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights ``.safetensors``, metadata ``.json``) for a file or directory ``path``."""
    path = Path(path)
    if path.is_dir() or (not path.suffix and not path.exists()):
        return path / "model.safetensors", path / "model.json"
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def save_model(model: MuvaModel, path: str | Path, *, include_text: bool = True, extra: dict | None = None) -> Path:
    """Write ``model`` as safetensors + JSON; returns the ``.safetensors`` path.

    ``include_text=False`` leaves out CLIP's text tower (≈ 63 M parameters for ViT-B/16),
    enough for inference; such a file cannot train prompts again.  ``extra`` (JSON-ready)
    is stored in ``model.json`` and comes back as :attr:`ModelInfo.extra` of
    :func:`read_model_info`.
    """
    weights, meta_path = model_paths(path)
    state = {}
    for k, v in model.state_dict().items():
        if not include_text and k.startswith("text."):
            continue
        state[k] = v.detach().to("cpu").contiguous().clone()
    info = ModelInfo.of(model)
    info.include_text = include_text
    info.extra = extra or {}
    with atomic_write(weights, "wb") as fh:
        fh.write(safetensors_bytes(state, metadata={"format": FORMAT}))
    atomic_write_text(meta_path, json.dumps(info.to_saved(), indent=2) + "\n")
    return weights


def read_model_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a saved model (its ``model.json``: config, identities, parts, grid)."""
    _, meta_path = model_paths(path)
    if not meta_path.is_file():
        raise ModelFileError(f"{meta_path} not found: a muva model is a .safetensors file with a .json beside it (written by save_model)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(meta_path, f"the JSON description is unreadable ({str(exc)[:120]})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise ModelFileError(f"{meta_path} is not a muva model description (format={fmt!r})")
    if not isinstance(meta.get("config"), dict):
        raise _corrupt(meta_path, "the JSON description has no model config")
    return ModelInfo.from_saved(meta)


def load_model(path: str | Path, num_classes: int | None = None, device: str | torch.device = "cpu", *, strict: bool = True) -> MuvaModel:
    """Load a model written by :func:`save_model` (returned in eval mode on ``device``).

    ``num_classes=None``: inference only — prompts and classifier are not built and their
    saved tensors are skipped (logged).  ``num_classes`` = the saved count restores them;
    a different count builds fresh ones (logged).  CLIP weights are never downloaded:
    everything comes from the file.
    """
    weights, _ = model_paths(path)
    info = read_model_info(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights} not found (the weights that go with the .json)")
    saved_classes = info.num_classes
    problem = safetensors_problem(weights)
    if problem:
        raise _corrupt(weights, problem)
    model = build_model(info.config, num_classes=num_classes or 0, load_weights=False)
    try:
        state = read_safetensors(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise _corrupt(weights, f"corrupt ({str(exc)[:200]})") from None
    skip = [k for k in IDENTITY_KEYS if k in state and (num_classes is None or num_classes != saved_classes)]
    if skip:
        why = "inference only" if num_classes is None else f"{num_classes} identities requested, {saved_classes} saved"
        log.warning("load_model: skipped identity-dependent tensors %s (%s)", ", ".join(skip), why)
        for k in skip:
            state.pop(k)
    # Files from before the mask predictors lost their key bias (the softmax cancels a
    # per-query constant, so dropping it changes no output): ignore those tensors.
    for k in [k for k in state if k.startswith("visual.mask_predictors.") and k.endswith(".k_proj.bias")]:
        state.pop(k)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not (k.startswith("text.") and not info.include_text)]
    missing = [k for k in missing if not (k in IDENTITY_KEYS and skip)]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise ModelFileError(
            f"{weights} does not match its config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    if not info.include_text:
        log.info("load_model: %s was saved without the text tower; text features are unavailable", weights)
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                if tuple(own[k].shape) != tuple(v.shape):
                    raise ModelFileError(f"{weights}: {k} has shape {tuple(v.shape)}, the config builds {tuple(own[k].shape)}")
                own[k].copy_(v.to(own[k].dtype))
    return model.to(device).eval()
