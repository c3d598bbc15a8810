"""The MUVA model on open_clip: part tokens, AM-MSA, multi-grained prompts, heads, weights I/O.

``from muva.models import ModelConfig, tiny_config`` is light (no torch); the rest
(``build_model``, ``MuvaModel``, ``save_model``, ``load_model``, ...) imports torch and
open_clip on first use.

    >>> from muva.models import build_model, tiny_config
    >>> model = build_model(tiny_config(), num_classes=10)
    >>> model.grid, model.num_patches, model.feature_dim
    ((8, 4), 32, 128)
"""

from __future__ import annotations


from muva.config import apply_overrides
from muva.models.config import ClipArch, ModelConfig, tiny_config
from muva.registry import Registry
from muva.utils.lazy import lazy_exports

__all__ = [
    "ClipArch",
    "ModelConfig",
    "tiny_config",
    "MODELS",
    "preset_config",
    "MuvaModel",
    "build_model",
    "save_model",
    "load_model",
    "read_model_info",
    "ModelInfo",
    "ModelFileError",
    "WeightsUnavailableError",
    "CheckpointMismatchError",
    "IDENTITY_KEYS",
    "compile_model",
    "CompileError",
]

_LAZY = {
    "MuvaModel": "muva.models.muva",
    "build_model": "muva.models.muva",
    "IDENTITY_KEYS": "muva.models.muva",
    "save_model": "muva.models.io",
    "load_model": "muva.models.io",
    "read_model_info": "muva.models.io",
    "ModelInfo": "muva.models.meta",
    "ModelFileError": "muva.models.io",
    "WeightsUnavailableError": "muva.models.clip_loading",
    "CheckpointMismatchError": "muva.models.clip_loading",
    "compile_model": "muva.models.compile",
    "CompileError": "muva.models.compile",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


#: Named model presets (the YAML files under configs/model/ hold the same settings).
MODELS = Registry("model preset")


@MODELS.register("muva-vitb16", aliases=("muva",))
def _muva_vitb16() -> ModelConfig:
    return ModelConfig(stride=16)


@MODELS.register("clipreid-vitb16", aliases=("clipreid", "clip-reid"))
def _clipreid_vitb16() -> ModelConfig:
    # CLIP-ReID's own choices: its prompt ends with a period; its BN neck runs once per step
    return ModelConfig(stride=16, parts=[], neck_momentum=0.1, global_template="A photo of a {ctx} person.")


MODELS.add("tiny", tiny_config)


def preset_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """A preset (``muva-vitb16``, ``clipreid-vitb16``, ``tiny``) with ``key=value`` overrides applied."""
    return apply_overrides(ModelConfig, MODELS.get(name)(), overrides)
