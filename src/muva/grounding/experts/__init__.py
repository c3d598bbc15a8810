"""Grounding experts, registered by name in :data:`EXPERTS` (imported lazily).

====== ============================================================ ===========
name   what it does                                                 needs
====== ============================================================ ===========
prior  average body proportions of the crop; always available       —
pose   BlazePose landmarks (tflite, LiteRT) → part boxes, on CPU    ai-edge-litert
mllm   a vision-language model (Qwen2.5-VL) asked one question/part transformers, GPU
import the MUVA authors' released mask pickles                      —
====== ============================================================ ===========
"""

from __future__ import annotations

import importlib

from muva.registry import Registry

EXPERTS = Registry("grounding expert")

_MODULES = {
    "prior": ("muva.grounding.experts.prior", "PriorExpert", ()),
    "pose": ("muva.grounding.experts.pose", "PoseExpert", ("blazepose",)),
    "mllm": ("muva.grounding.experts.mllm", "MLLMExpert", ("qwen", "vlm")),
    "import": ("muva.grounding.experts.importer", "ImportExpert", ("pickle", "authors")),
}


def _lazy(module: str, cls: str):
    def factory(**options):
        return getattr(importlib.import_module(module), cls)(**options)

    factory.__doc__ = f"Build {module}.{cls} (imported on first use)."
    return factory


for _name, (_mod, _cls, _aliases) in _MODULES.items():
    EXPERTS.add(_name, _lazy(_mod, _cls), aliases=_aliases)


def build_expert(name: str, **options):
    """Build a registered expert by name with its keyword options (e.g. ``parts=...``)."""
    return EXPERTS.get(name)(**options)


__all__ = ["EXPERTS", "build_expert"]
