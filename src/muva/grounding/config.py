"""The ``grounding:`` section of an experiment config: which expert makes the pseudo part masks.

One section states everything about grounding a run needs, so a grounding run can be
reproduced from the training config alone (``muva ground run -c CONFIG``)::

    grounding:
      expert: pose                 # prior | pose | mllm | gdino | import | a plugin
      options: {threads: 2}        # the expert's options (as -X KEY=VALUE); see `muva ground experts`
      caches: {}                   # source → cache file (else the default cache)
      dir: null                    # default caches: <dir>/grounding/<dataset>/<expert>.sqlite (default runs, or $MUVA_RUNS)
      missing: error               # images absent from a cache: error | prior | skip
      min_fraction: 0.5            # box → patch mask: share of a patch inside the box

The parts are not stated here: they are the model's (``model.parts``).  A cache written by
``muva ground run`` holds every known part by default and serves any subset of them.
Imports nothing heavy (configs load in milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

__all__ = ["GroundingConfig", "RENAMED_GROUNDING_KEYS"]


@dataclass
class GroundingConfig:
    """Grounding expert, its options and where its caches are."""

    expert: str = "pose"
    options: dict[str, Any] = field(default_factory=dict)  # checked against the expert's options
    caches: dict[str, str] = field(default_factory=dict)  # source → grounding cache file
    dir: Optional[str] = None  # default caches go to <dir>/grounding/<dataset>/<expert>.sqlite (default runs, or $MUVA_RUNS)
    missing: Literal["error", "prior", "skip"] = "error"  # images absent from the cache
    min_fraction: float = 0.5  # box → patch mask: share of a patch inside the box (as `muva ground show --min-fraction`)


# Keys of older muva versions (under ``data:``) and their place in this section; configs and
# checkpoints that use them still load (muva.config.upgrade_tree moves them).
RENAMED_GROUNDING_KEYS = {
    "data.grounding_expert": "grounding.expert",
    "data.grounding_dir": "grounding.dir",
    "data.grounding_missing": "grounding.missing",
    "data.min_fraction": "grounding.min_fraction",
    "data.grounding": "grounding.caches",
}
