"""Save and load trained MUVA models: ``model.safetensors`` + ``model.json`` (config, identities).

    save_model(model, "runs/x/model.safetensors")   # writes model.safetensors + model.json
    model = load_model("runs/x/model.safetensors")  # inference: prompts/classifier skipped

``path`` may name the ``.safetensors`` file, the ``.json`` file, or a directory holding
``model.safetensors``.  Loading with ``num_classes=None`` (inference on another dataset)
skips the identity-dependent tensors (``prompts.ctx``, ``classifier.fc.weight``) and
says so; loading with the saved identity count restores everything.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from muva import __version__
from muva.config import from_dict, to_dict
from muva.models.config import LEGACY_MODEL_DEFAULTS, ModelConfig
from muva.models.muva import IDENTITY_KEYS, MuvaModel, build_model
from muva.utils.io import atomic_write, atomic_write_text

__all__ = ["save_model", "load_model", "model_paths", "ModelFileError", "FORMAT"]

log = logging.getLogger("muva.models")

FORMAT = "muva-model"
FORMAT_VERSION = 1


class ModelFileError(RuntimeError):
    """A model file that is missing, incomplete or not a muva model."""


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
    enough for inference; such a file cannot train prompts again.
    """
    from safetensors.torch import save

    weights, meta_path = model_paths(path)
    state = {}
    for k, v in model.state_dict().items():
        if not include_text and k.startswith("text."):
            continue
        state[k] = v.detach().to("cpu").contiguous().clone()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "muva_version": __version__,
        "num_classes": model.num_classes,
        "parts": list(model.parts),
        "grid": list(model.grid),
        "feature_dim": model.feature_dim,
        "num_layers": model.num_layers,
        "include_text": include_text,
        "config": to_dict(model.cfg),
        "extra": extra or {},
    }
    with atomic_write(weights, "wb") as fh:
        fh.write(save(state, metadata={"format": FORMAT}))
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return weights


def read_model_meta(path: str | Path) -> dict:
    """The JSON metadata of a saved model (config, identities, parts, grid)."""
    weights, meta_path = model_paths(path)
    if not meta_path.is_file():
        raise ModelFileError(f"{meta_path} not found: a muva model is a .safetensors file with a .json beside it (written by save_model)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{meta_path} is not a muva model description (format={meta.get('format')!r})")
    return meta


def load_model(path: str | Path, num_classes: int | None = None, device: str | torch.device = "cpu", *, strict: bool = True) -> MuvaModel:
    """Load a model written by :func:`save_model` (returned in eval mode on ``device``).

    ``num_classes=None``: inference only — prompts and classifier are not built and their
    saved tensors are skipped (logged).  ``num_classes`` = the saved count restores them;
    a different count builds fresh ones (logged).  CLIP weights are never downloaded:
    everything comes from the file.
    """
    from safetensors.torch import load_file

    weights, _ = model_paths(path)
    meta = read_model_meta(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights} not found (the weights that go with the .json)")
    saved_cfg = dict(meta["config"])
    # a file written before an option existed was built the old way: keep it that way
    saved_cfg.update({k: v for k, v in LEGACY_MODEL_DEFAULTS.items() if k not in saved_cfg})
    cfg = from_dict(ModelConfig, saved_cfg)
    saved_classes = int(meta.get("num_classes", 0))
    model = build_model(cfg, num_classes=num_classes or 0, load_weights=False)
    state = load_file(str(weights), device="cpu")
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
    missing = [k for k in own if k not in state and not (k.startswith("text.") and not meta.get("include_text", True))]
    missing = [k for k in missing if not (k in IDENTITY_KEYS and skip)]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise ModelFileError(
            f"{weights} does not match its config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    if not meta.get("include_text", True):
        log.info("load_model: %s was saved without the text tower; text features are unavailable", weights)
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                if tuple(own[k].shape) != tuple(v.shape):
                    raise ModelFileError(f"{weights}: {k} has shape {tuple(v.shape)}, the config builds {tuple(own[k].shape)}")
                own[k].copy_(v.to(own[k].dtype))
    return model.to(device).eval()
