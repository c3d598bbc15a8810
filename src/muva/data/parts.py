"""Body-part vocabulary shared by the generator, grounding experts, masks and the model.

Every fact muva keeps about a part lives in its :class:`Part` record, and the records live
in one table, :data:`PARTS` (ordered top to bottom).  Consumers read the record:

* prompts and grounding questions — :attr:`Part.phrase`;
* the body prior (``muva.grounding.experts.prior``) — :attr:`Part.prior`;
* box validation (``muva.grounding.boxes``) — :attr:`Part.order`, :attr:`Part.max_area`;
* the MLLM expert — :attr:`Part.union` (left / right boxes joined into one);
* pictures (``muva.viz.masks``) — :attr:`Part.colour`;
* the default part list of MUVA (R = 3) — :attr:`Part.default`.

Two consumers also keep a per-part *geometry rule* keyed by the same names: the pose
expert (which keypoints make the part's box) and the synthetic painter (which drawn
pieces make it).  Both call :func:`require_rules` when imported, so a part added here
without those rules fails at import with a message naming the part.

Adding a part: add one :class:`Part` to ``_RECORDS`` below, then its pose rule
(``muva.grounding.experts.pose``) and its synthetic rule (``muva.data.synth.figure``).

Boxes are (x0, y0, x1, y1) in pixels of the image they belong to, x1/y1 exclusive (the
box covers x0 <= x < x1, y0 <= y < y1).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

from muva.utils.errors import MuvaError

__all__ = [
    "DEFAULT_PARTS", "PARTS", "PART_NAMES", "PART_PHRASES", "Part", "PartTableError", "UnknownPartError", "check_parts", "get_part", "require_rules",
]


class PartTableError(MuvaError, LookupError):
    """The part table and a per-part rule table disagree (a part without its rule, or a rule for no part)."""


@dataclass(frozen=True)
class Part:
    """Everything muva knows about one body part.

    Attributes:
        name: identifier used in configs, caches and on the command line (``upper_body``).
        phrase: words used in prompts and grounding questions (``upper body``).
        prior: the body prior's box as fractions (x0, y0, x1, y1) of the crop width / height.
        order: expected top-to-bottom rank of the part's centre (smaller = higher).
        max_area: largest plausible share of the image for parts small by nature (None = no limit).
        union: whether several boxes in one answer (left / right) are joined into one.
        colour: RGB overlay colour in pictures (distinct per part).
        default: whether the part is one of MUVA's default parts.
        synonyms: other words a model may label the part with in an answer about several
            parts at once (matched after the phrase; the longest match wins).
    """

    name: str
    phrase: str
    prior: tuple[float, float, float, float]
    order: int
    colour: tuple[int, int, int]
    max_area: float | None = None
    union: bool = False
    default: bool = False
    synonyms: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[str, ...]:
        """The words naming the part in an answer: its phrase, then its synonyms."""
        return (self.phrase, *self.synonyms)


# The table, top to bottom.  The prior fractions follow typical Market-1501 / DukeMTMC crops.
_RECORDS: tuple[Part, ...] = (
    Part("head", "head", (0.30, 0.01, 0.70, 0.17), order=0, colour=(255, 200, 0), max_area=0.35, default=True,
         synonyms=("face",)),
    Part("upper_body", "upper body", (0.10, 0.15, 0.90, 0.55), order=1, colour=(0, 140, 255), default=True,
         synonyms=("torso", "upper part of the body", "shirt", "jacket", "coat")),
    Part("legs", "legs", (0.15, 0.52, 0.85, 0.95), order=2, colour=(255, 60, 160), union=True, default=True,
         synonyms=("lower body", "pants", "trousers", "jeans", "shorts", "skirt")),
    Part("shoes", "shoes", (0.15, 0.89, 0.85, 1.00), order=3, colour=(60, 220, 60), max_area=0.35, union=True,
         synonyms=("feet", "foot", "boots", "sneakers", "footwear")),
)


def _check_table(records: Iterable[Part]) -> Mapping[str, Part]:
    """The records as a read-only ordered mapping, after checking they are consistent."""
    table: dict[str, Part] = {}
    for rec in records:
        if rec.name in table:
            raise PartTableError(f"part {rec.name!r} is listed twice in the part table")
        x0, y0, x1, y1 = rec.prior
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise PartTableError(f"part {rec.name!r}: prior box {rec.prior} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if rec.max_area is not None and not 0.0 < rec.max_area <= 1.0:
            raise PartTableError(f"part {rec.name!r}: max_area {rec.max_area} must be in (0, 1]")
        table[rec.name] = rec
    for attr in ("order", "colour"):
        values = [getattr(r, attr) for r in table.values()]
        if len(set(values)) != len(values):
            raise PartTableError(f"parts must have distinct {attr}s; got {dict(zip(table, values))}")
    named: dict[str, str] = {}
    for rec in table.values():
        for term in rec.terms:
            other = named.setdefault(term.lower(), rec.name)
            if other != rec.name:
                raise PartTableError(f"{term!r} names both {other!r} and {rec.name!r}; a phrase or synonym must name one part")
    return MappingProxyType(table)


# Part name → record, top to bottom.
PARTS: Mapping[str, Part] = _check_table(_RECORDS)
# Every part muva knows, top to bottom.
PART_NAMES: tuple[str, ...] = tuple(PARTS)
# MUVA's default parts (R = 3).
DEFAULT_PARTS: tuple[str, ...] = tuple(p.name for p in PARTS.values() if p.default)
# Words used in prompts and grounding questions (a view of the records).
PART_PHRASES: Mapping[str, str] = MappingProxyType({p.name: p.phrase for p in PARTS.values()})


class UnknownPartError(PartTableError, ValueError):
    """A part name that is not in the table, or one given twice."""


def check_parts(parts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a list of part names (order kept); raises :class:`UnknownPartError` naming the valid ones."""
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UnknownPartError(f"unknown part(s) {', '.join(unknown)}; valid parts: {', '.join(PART_NAMES)}")
    if len(set(parts)) != len(parts):
        raise UnknownPartError(f"duplicate part names in {parts}")
    return parts


def get_part(name: str) -> Part:
    """The record of one part; raises :class:`UnknownPartError` naming the valid parts."""
    try:
        return PARTS[name]
    except KeyError:
        raise UnknownPartError(f"unknown part {name!r}; valid parts: {', '.join(PART_NAMES)}") from None


def require_rules(kind: str, rules: Mapping[str, object], where: str) -> None:
    """Check that a per-part rule table covers exactly the registered parts.

    Called at import time by modules that keep geometry rules keyed by part name (the
    pose expert, the synthetic painter).  Raises :class:`PartTableError` naming the parts
    without a rule (and rule names that are no part).
    """
    missing = [p for p in PARTS if p not in rules]
    extra = [k for k in rules if k not in PARTS]
    if missing or extra:
        msg = []
        if missing:
            msg.append(f"part(s) {', '.join(missing)} of muva.data.parts have no {kind} rule")
        if extra:
            msg.append(f"{kind} rule(s) for {', '.join(extra)} name no part of muva.data.parts")
        raise PartTableError(f"{'; '.join(msg)}: add them in {where}")
