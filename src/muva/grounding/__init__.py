"""Visual grounding expert: body-part boxes → patch masks, the pseudo labels MUVA trains on.

    images → expert (pose | prior | mllm | import) → validation + per-part fallback
           → :class:`GroundingCache` (SQLite, resumable, sharded) → :func:`load_pseudo_masks`

Light to import (NumPy only); experts load their models on construction.  The command
line is ``muva ground ...`` (see ``docs/grounding.md``).
"""

import importlib

_EXPORTS = {
    "PartBox": "boxes", "Proposal": "boxes", "ValidationRules": "boxes", "box_iou": "boxes", "clip_box": "boxes", "validate_parts": "boxes",
    "CacheEntry": "cache", "GroundingCache": "cache", "GroundingCacheError": "cache", "default_cache_path": "cache", "merge_caches": "cache",
    "boxes_to_patch_masks": "masks", "flip_patch_masks": "masks", "from_additive": "masks", "load_pseudo_masks": "masks",
    "patch_grid": "masks", "to_additive": "masks",
}


def __getattr__(name: str):
    # Lazy: ``muva ground --help`` imports this package and must not pay for NumPy / SQLite.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"muva.grounding.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'muva.grounding' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
