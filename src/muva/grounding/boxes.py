"""Part boxes: clipping, validation and per-part fallback with the reason recorded.

A box is ``(x0, y0, x1, y1)`` in pixels of the image it belongs to, x1/y1 exclusive
(see :mod:`muva.data.parts`).  An expert proposes at most one box per part; the
proposal is *validated* here and, when it fails, replaced by the fallback box
(normally the body prior, :func:`prior_boxes`) with a short machine-readable reason:

``missing``      the expert gave no box (no answer, unparsable answer, invisible keypoints)
``empty``        zero or negative width/height after clipping to the image
``outside``      the box lies entirely outside the image
``tiny``         covers less than ``min_area`` of the image (or under 2 px on a side)
``huge``         a small part (head, shoes) covering more than ``max_area`` of the image
``order``        implausible vertical order (e.g. head centre below the legs' centre)
``unparsable``   (MLLM) the answer held no box in the expected format
``invisible``    (pose) the part's keypoints were not visible enough
``unreadable``   the image could not be decoded (whole record, no boxes)

The per-part facts used here (vertical order, largest plausible area, prior box) are
read from the part records of :mod:`muva.data.parts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from muva.data.parts import DEFAULT_PARTS, PARTS

Box = tuple[float, float, float, float]

REASONS = ("missing", "unparsable", "invisible", "empty", "outside", "tiny", "huge", "order")

# Score of the body prior's boxes.
PRIOR_SCORE = 0.25


@dataclass
class PartBox:
    """One validated part box.

    Attributes:
        box: (x0, y0, x1, y1) in image pixels, x1/y1 exclusive, inside the image.
        score: confidence in [0, 1] given by the expert (the fallback keeps its own).
        source: name of the expert that produced ``box`` (e.g. ``pose`` or ``prior``).
        reason: why the proposing expert's box was replaced, or ``None`` when kept.
        via: how the expert got the answer, when it has several ways (the MLLM expert:
            ``joint`` = one answer for every part of the crop, ``single`` = a question
            about this part alone); ``None`` otherwise.  Kept on fallback boxes too: it
            tells which question's answer was rejected.
    """

    box: Box
    score: float = 1.0
    source: str = "prior"
    reason: str | None = None
    via: str | None = None

    def to_json(self) -> dict:
        out = {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4), "source": self.source}
        if self.reason:
            out["reason"] = self.reason
        if self.via:
            out["via"] = self.via
        return out

    @classmethod
    def from_json(cls, obj: Mapping) -> "PartBox":
        return cls(tuple(float(v) for v in obj["box"]), float(obj.get("score", 1.0)), str(obj.get("source", "?")), obj.get("reason"),
                   obj.get("via"))


@dataclass
class Proposal:
    """An expert's raw answer for one part: a box (or None) and a score, with an optional reason
    and the way it was asked (:attr:`PartBox.via`)."""

    box: Box | None
    score: float = 1.0
    reason: str | None = None
    via: str | None = None


def _default_max_area() -> dict[str, float]:
    """Largest plausible image share of the parts small by nature (from the part records)."""
    return {p.name: p.max_area for p in PARTS.values() if p.max_area is not None}


@dataclass
class ValidationRules:
    """Thresholds of :func:`validate_parts` (fractions of the image area / size)."""

    min_area: float = 0.004
    min_side_px: float = 2.0
    max_area: dict[str, float] = field(default_factory=_default_max_area)
    check_order: bool = True


def prior_boxes(width: float, height: float, parts: Sequence[str] = DEFAULT_PARTS) -> dict[str, PartBox]:
    """The body prior's box for each part of a ``width`` × ``height`` crop (:attr:`Part.prior`)."""
    out = {}
    for part in parts:
        fx0, fy0, fx1, fy1 = PARTS[part].prior
        out[part] = PartBox((fx0 * width, fy0 * height, fx1 * width, fy1 * height), PRIOR_SCORE, "prior", None)
    return out


# Fallback boxes of an expert: (width, height, parts) → part name → PartBox (e.g. :func:`prior_boxes`).
Fallback = Callable[[float, float, Sequence[str]], Mapping[str, PartBox]]


def clip_box(box: Sequence[float], width: float, height: float) -> Box:
    """Clip a box to ``[0, width] x [0, height]`` and order its corners (x0 <= x1, y0 <= y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0:
        x0, x1 = x1, x0
    if y1 < y0:
        y0, y1 = y1, y0
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))


def box_area(box: Sequence[float]) -> float:
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _finite(box: Sequence[float]) -> bool:
    return len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)


def check_box(part: str, box: Sequence[float] | None, width: int, height: int, rules: ValidationRules) -> tuple[Box | None, str | None]:
    """Clip one proposed box and return ``(clipped_box, None)`` or ``(None, reason)``."""
    if box is None or not _finite(box):
        return None, "missing"
    x0, y0, x1, y1 = (float(v) for v in box)
    if min(x1, x0) >= width or min(y1, y0) >= height or max(x0, x1) <= 0 or max(y0, y1) <= 0:
        return None, "outside"
    clipped = clip_box(box, width, height)
    w, h = clipped[2] - clipped[0], clipped[3] - clipped[1]
    if w <= 0 or h <= 0:
        return None, "empty"
    if w < rules.min_side_px or h < rules.min_side_px or w * h < rules.min_area * width * height:
        return None, "tiny"
    limit = rules.max_area.get(part)
    if limit is not None and w * h > limit * width * height:
        return None, "huge"
    return clipped, None


def _centre_y(box: Sequence[float]) -> float:
    return 0.5 * (box[1] + box[3])


def order_violations(boxes: Mapping[str, Box]) -> set[str]:
    """Parts whose vertical position contradicts the body order.

    Parts are compared pairwise by box centre; a pair out of order marks the part that
    is out of place with respect to most others (ties: both).  The expected order is
    :attr:`muva.data.parts.Part.order`: the head above the upper body, above the legs,
    above the shoes.
    """
    names = [p for p in boxes if p in PARTS]
    bad_pairs: list[tuple[str, str]] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            upper, lower = (a, b) if PARTS[a].order < PARTS[b].order else (b, a)
            if _centre_y(boxes[upper]) >= _centre_y(boxes[lower]):
                bad_pairs.append((upper, lower))
    if not bad_pairs:
        return set()
    counts: dict[str, int] = {}
    for u, l in bad_pairs:
        counts[u] = counts.get(u, 0) + 1
        counts[l] = counts.get(l, 0) + 1
    worst = max(counts.values())
    # The part(s) involved in most inverted pairs are out of place; with a tie (e.g. two
    # parts swapped between themselves) both are flagged and both fall back, which is safe.
    return {p for p, c in counts.items() if c == worst}


def validate_parts(
    proposals: Mapping[str, Proposal | None],
    parts: Sequence[str],
    width: int,
    height: int,
    *,
    source: str,
    fallback: Mapping[str, PartBox],
    rules: ValidationRules | None = None,
) -> dict[str, PartBox]:
    """Validate an expert's proposals and fall back per part; every part of ``parts`` gets a box.

    Args:
        proposals: part name → :class:`Proposal` (or None / absent = no answer).
        parts: the parts wanted, in order.
        width, height: image size in pixels.
        source: name of the proposing expert (recorded on kept boxes).
        fallback: part name → :class:`PartBox` used for rejected parts (e.g. the prior's).
        rules: thresholds; defaults to :class:`ValidationRules`.
    """
    rules = rules or ValidationRules()
    kept: dict[str, tuple[Box, float]] = {}
    reasons: dict[str, str] = {}
    via = {p: prop.via for p, prop in proposals.items() if prop is not None}
    for part in parts:
        prop = proposals.get(part)
        if prop is None or prop.box is None:
            reasons[part] = (prop.reason if prop is not None and prop.reason else "missing")
            continue
        box, why = check_box(part, prop.box, width, height, rules)
        if box is None:
            reasons[part] = why or "missing"
        else:
            kept[part] = (box, float(prop.score))
    if rules.check_order and len(kept) >= 2:
        for part in order_violations({p: b for p, (b, _) in kept.items()}):
            kept.pop(part)
            reasons[part] = "order"
    out: dict[str, PartBox] = {}
    for part in parts:
        if part in kept:
            box, score = kept[part]
            out[part] = PartBox(box, min(max(score, 0.0), 1.0), source, None, via.get(part))
        else:
            fb = fallback[part]
            out[part] = PartBox(fb.box, fb.score, fb.source, reasons.get(part, "missing"), via.get(part))
    return out
