"""The expert interface: propose boxes for a batch of images, then validate with fallback."""

from __future__ import annotations

from typing import Sequence

from muva.data.parts import DEFAULT_PARTS, PART_NAMES, check_parts
from muva.grounding.boxes import Fallback, PartBox, Proposal, ValidationRules, prior_boxes, validate_parts
from muva.grounding.cache import CacheEntry
from muva.grounding.experts.spec import NoOptions


class GroundingExpert:
    """Base class of grounding experts.

    Subclasses implement :meth:`propose` (raw per-part proposals for a batch of RGB PIL
    images).  :meth:`ground` validates them and fills rejected parts from the fallback
    boxes, so callers always receive one :class:`PartBox` per configured part.

    Args:
        parts: the parts it is asked for, in order.
        rules: validation thresholds (default :class:`ValidationRules`).
        fallback: ``(width, height, parts) → {part: PartBox}`` for rejected parts; None =
            the body prior, :func:`muva.grounding.boxes.prior_boxes`.

    Attributes:
        name: the expert's registry name (recorded as the ``source`` of its boxes).
        parts: the parts it is asked for, in order.
        fallback: the fallback box function.
        batch_size: how many images :meth:`propose` prefers at once.
        Options: the dataclass of its user-settable options (keyword arguments of
            ``__init__``; see :mod:`muva.grounding.experts.spec`).
    """

    name = "base"
    batch_size = 8
    Options: type = NoOptions

    @classmethod
    def check_options(cls, options) -> None:
        """Reject options that cannot work before any image is read (a MuvaError); nothing by default."""

    @classmethod
    def default_parts(cls, options) -> tuple[str, ...]:
        """The parts ``muva ground run`` writes when no ``--parts`` is given: every known part.

        A cache holding every part serves any model's subset, so the part list is stated
        once per run, by ``model.parts``.  An expert that can only produce some (imported
        masks) says which."""
        return PART_NAMES

    def __init__(self, parts: Sequence[str] = DEFAULT_PARTS, rules: ValidationRules | None = None, fallback: Fallback | None = None):
        self.parts = check_parts(parts)
        self.rules = rules or ValidationRules()
        self.fallback: Fallback = fallback if fallback is not None else prior_boxes

    def describe(self) -> dict:
        """Settings recorded in the cache's metadata (model file, prompt, ...)."""
        return {"expert": self.name, "parts": list(self.parts)}

    def propose(self, images: Sequence) -> list[dict[str, Proposal]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def ground(self, images: Sequence) -> list[dict[str, PartBox]]:
        """Validated boxes for each image (PIL RGB), one per part, with :attr:`fallback` for rejected ones."""
        out = []
        for image, props in zip(images, self.propose(images)):
            w, h = image.size
            fallback = self.fallback(w, h, self.parts)
            out.append(validate_parts(props, self.parts, w, h, source=self.name, fallback=fallback, rules=self.rules))
        return out

    def entries(self, keys: Sequence[str], images: Sequence) -> list:
        """Cache entries for decoded images (``keys`` are their cache keys)."""
        return [CacheEntry(k, "ok", im.size[0], im.size[1], boxes) for k, im, boxes in zip(keys, images, self.ground(images))]

    def notes(self) -> list[str]:
        """Lines worth telling the user after a run (counts of special cases); none by default."""
        return []

    def close(self) -> None:
        """Release models / interpreters (optional)."""
