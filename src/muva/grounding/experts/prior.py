"""The body prior: part boxes from average proportions of a pedestrian crop.

Re-ID crops come from a person detector, so the person fills the crop's height and is
roughly centred.  The fractions below follow typical Market-1501 / DukeMTMC crops (and
the example boxes in MUVA's figure: head [38,3,73,44], upper body [10,49,126,142], legs
[2,145,103,255] on a 128×256 crop).  They are kept in each part's record
(:attr:`muva.data.parts.Part.prior`); :func:`prior_boxes` (defined beside the validation
in :mod:`muva.grounding.boxes`) scales them to a crop.  The prior is always available and
is the default per-part fallback of every other expert.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Sequence

from muva.data.parts import PARTS
from muva.grounding.boxes import PRIOR_SCORE, PartBox, Proposal, prior_boxes
from muva.grounding.experts.base import GroundingExpert
from muva.grounding.experts.spec import NoOptions, register_expert

__all__ = ["PRIOR_FRACTIONS", "PRIOR_SCORE", "PriorExpert", "prior_boxes"]

# Part → (x0, y0, x1, y1) as fractions of the crop width / height (a view of the part records).
PRIOR_FRACTIONS = MappingProxyType({p.name: p.prior for p in PARTS.values()})


@register_expert("prior", summary="average body proportions of the crop; always available, the fallback of the others")
class PriorExpert(GroundingExpert):
    """Average body proportions (no model); see :attr:`muva.data.parts.Part.prior`."""

    name = "prior"
    batch_size = 256
    Options = NoOptions

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
