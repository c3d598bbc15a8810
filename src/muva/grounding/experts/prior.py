"""The body prior: part boxes from average proportions of a pedestrian crop.

Re-ID crops come from a person detector, so the person fills the crop's height and is
roughly centred.  The fractions below follow typical Market-1501 / DukeMTMC crops (and
the example boxes in MUVA's figure: head [38,3,73,44], upper body [10,49,126,142], legs
[2,145,103,255] on a 128×256 crop).  The prior is always available and is the per-part
fallback of every other expert.
"""

from __future__ import annotations

from typing import Sequence

from muva.data.parts import DEFAULT_PARTS
from muva.grounding.boxes import PartBox, Proposal
from muva.grounding.experts.base import GroundingExpert

# Part → (x0, y0, x1, y1) as fractions of the crop width / height.
PRIOR_FRACTIONS: dict[str, tuple[float, float, float, float]] = {
    "head": (0.30, 0.01, 0.70, 0.17),
    "upper_body": (0.10, 0.15, 0.90, 0.55),
    "legs": (0.15, 0.52, 0.85, 0.95),
    "shoes": (0.15, 0.89, 0.85, 1.00),
}
PRIOR_SCORE = 0.25


def prior_boxes(width: float, height: float, parts: Sequence[str] = DEFAULT_PARTS) -> dict[str, PartBox]:
    """The prior's box for each part of a ``width`` × ``height`` crop."""
    out = {}
    for part in parts:
        fx0, fy0, fx1, fy1 = PRIOR_FRACTIONS[part]
        out[part] = PartBox((fx0 * width, fy0 * height, fx1 * width, fy1 * height), PRIOR_SCORE, "prior", None)
    return out


class PriorExpert(GroundingExpert):
    """Average body proportions (no model); see :data:`PRIOR_FRACTIONS`."""

    name = "prior"
    batch_size = 256

    def propose(self, images: Sequence) -> list[dict[str, Proposal]]:
        out = []
        for image in images:
            w, h = image.size
            out.append({p: Proposal(b.box, b.score) for p, b in prior_boxes(w, h, self.parts).items()})
        return out

    def ground(self, images: Sequence) -> list[dict[str, PartBox]]:
        return [prior_boxes(*image.size, self.parts) for image in images]

    def ground_sizes(self, sizes: Sequence[tuple[int, int]]) -> list[dict[str, PartBox]]:
        """Boxes from image sizes alone (the prior needs no pixels)."""
        return [prior_boxes(w, h, self.parts) for w, h in sizes]
