"""Visual grounding expert: body-part boxes → patch masks, the pseudo labels MUVA trains on.

    images → expert (pose | prior | mllm | import) → validation + per-part fallback
           → :class:`GroundingCache` (SQLite, resumable, sharded) → :func:`load_pseudo_masks`

Light to import (NumPy only); experts load their models on construction.  The command
line is ``muva ground ...`` (see ``docs/grounding.md``).
"""

from muva.utils.lazy import lazy_exports

# Lazy (muva.utils.lazy): `muva ground --help` imports this package and must not pay for NumPy / SQLite.
_EXPORTS = {
    "PartBox": "boxes", "Proposal": "boxes", "ValidationRules": "boxes", "box_iou": "boxes", "clip_box": "boxes", "validate_parts": "boxes",
    "CacheEntry": "cache", "GroundingCache": "cache", "GroundingCacheError": "cache", "default_cache_path": "cache", "merge_caches": "cache",
    "boxes_to_patch_masks": "masks", "flip_patch_masks": "masks", "from_additive": "masks", "load_pseudo_masks": "masks",
    "to_additive": "masks",
}
# defined in the lowest layer, shared with the model (muva.models.vit)
_SHARED = {"patch_grid": "muva.utils.geometry"}


__all__ = sorted({**_EXPORTS, **_SHARED})
__getattr__, __dir__ = lazy_exports(__name__, {**{k: "." + v for k, v in _EXPORTS.items()}, **_SHARED})
