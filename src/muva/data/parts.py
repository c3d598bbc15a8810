"""Body-part vocabulary shared by the generator, grounding experts, masks and the model."""

from __future__ import annotations

# Every part muva knows, top to bottom.  Boxes are (x0, y0, x1, y1) in pixels of the
# image they belong to, x1/y1 exclusive (the box covers x0 <= x < x1, y0 <= y < y1).
PART_NAMES: tuple[str, ...] = ("head", "upper_body", "legs", "shoes")
# MUVA's default parts (R = 3).
DEFAULT_PARTS: tuple[str, ...] = ("head", "upper_body", "legs")
# Words used in prompts and grounding questions.
PART_PHRASES: dict[str, str] = {
    "head": "head",
    "upper_body": "upper body",
    "legs": "legs",
    "shoes": "shoes",
}


def check_parts(parts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a list of part names (order kept); raises ValueError naming the valid ones."""
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PART_NAMES]
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; valid parts: {', '.join(PART_NAMES)}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"duplicate part names in {parts}")
    return parts
