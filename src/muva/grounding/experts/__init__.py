"""Grounding experts: plugins registered by name in :data:`EXPERTS` (found lazily).

====== ============================================================ ===========
name   what it does                                                 needs
====== ============================================================ ===========
prior  average body proportions of the crop; always available       —
pose   BlazePose landmarks (tflite, LiteRT) → part boxes, on CPU    ai-edge-litert
mllm   a vision-language model (Qwen2.5-VL) asked one question/part transformers, GPU
import the MUVA authors' released mask pickles                      —
====== ============================================================ ===========

Each expert is a class in its own module of this package that registers itself with
:func:`register_expert` and declares its options in a dataclass (``Options``); see
:mod:`muva.grounding.experts.spec`.  The registry imports those modules the first time
it is asked for a name; they import heavy packages (torch, transformers, LiteRT) only
when an expert is built, so :func:`option_infos` lists options without building anything.
"""

from __future__ import annotations

from muva.grounding.experts.spec import (
    EXPERTS,
    ExpertOptionError,
    NoOptions,
    OptionInfo,
    build_expert,
    describe_options,
    expert_options,
    option,
    option_infos,
    options_dict,
    register_expert,
)

__all__ = [
    "EXPERTS", "ExpertOptionError", "NoOptions", "OptionInfo", "build_expert", "describe_options", "expert_options",
    "option", "option_infos", "options_dict", "register_expert",
]
