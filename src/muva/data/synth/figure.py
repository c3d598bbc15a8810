"""The geometry of a synthetic pedestrian: its pose, its joints and the boxes of its parts.

A person is a 2-D articulated figure.  :func:`sample_pose` draws how one image shows it:
the viewpoint (``front``, ``back``, ``left`` or ``right``; side views face that way), a
walking phase that swings legs and arms, stature, position and an optional occluder.
:func:`skeleton` turns a pose into joint positions (hips, knees, ankles, shoulders, elbows,
wrists).  Nothing here draws: the painter (:mod:`muva.data.synth.render`) draws garments,
skin and accessories over these joints with PIL.

Part boxes are tracked while drawing, in canvas pixels, as ``[x0, y0, x1, y1]`` with x1/y1
exclusive.  Each drawn *piece* (:data:`PIECES`) reports its extent to a :class:`PartBoxes`,
and :data:`PART_PIECES` says which pieces make each part's box: head (hair/hat to chin),
upper_body (neck base to hem or hands, arms and a backpack included), legs (hips to soles,
feet included, as grounding experts box "the legs") and shoes.  Every part of
:mod:`muva.data.parts` needs an entry there (checked on import).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from muva.data.parts import PART_NAMES, PartTableError, require_rules
from muva.data.synth.appearance import Identity

VIEWS = ("front", "back", "left", "right")
# The drawn pieces that report their extent (see PartBoxes.piece).
PIECES = ("head", "torso", "arm", "backpack", "hips", "leg", "shoe")
# Part name → the pieces whose extents make its box; every part needs one (checked on import).
PART_PIECES: dict[str, tuple[str, ...]] = {
    "head": ("head",),
    "upper_body": ("torso", "arm", "backpack"),
    "legs": ("hips", "leg", "shoe"),
    "shoes": ("shoe",),
}
require_rules("synthetic", PART_PIECES, "muva.data.synth.figure.PART_PIECES")
_unknown_pieces = sorted({q for qs in PART_PIECES.values() for q in qs} - set(PIECES))
if _unknown_pieces:
    raise PartTableError(f"muva.data.synth.figure.PART_PIECES names unknown piece(s) {', '.join(_unknown_pieces)}; "
                         f"drawn pieces: {', '.join(PIECES)}")
# Body width relative to the proportions below (pedestrian crops show sturdy figures).
WIDTH = 1.25

Point = tuple[float, float]


@dataclass(frozen=True)
class Pose:
    """Per-image placement and articulation of a person on a canvas."""

    view: str
    phase: float          # walking phase, radians
    stride: float         # hip swing amplitude, radians
    arm_swing: float      # arm swing relative to the legs
    height: float         # stature in canvas pixels (crown to sole)
    cx: float             # horizontal centre, canvas pixels
    baseline: float       # y of the soles, canvas pixels
    hand: int             # which hand holds a handbag (+1 right, -1 left in the image)
    occluder: tuple | None = None   # (kind, x0, y0, x1, y1, colour) in canvas pixels

    @property
    def side(self) -> bool:
        """A side view (the figure walks left or right)."""
        return self.view in ("left", "right")

    @property
    def facing(self) -> float:
        """-1 when the figure faces left in the image, else +1 (the sign of "forwards" along x)."""
        return -1.0 if self.view == "left" else 1.0


def sample_pose(rng: np.random.Generator, ident: Identity, view_probs, scale: float, canvas: tuple[int, int],
                occlusion_prob: float) -> Pose:
    """Draw a walking pose, viewpoint, scale and position jitter (fixed draw order)."""
    cw, ch = canvas
    view = VIEWS[int(rng.choice(4, p=np.asarray(view_probs) / np.sum(view_probs)))]
    phase = float(rng.uniform(0, 2 * math.pi))
    stride = float(rng.uniform(0.22, 0.5))
    arm_swing = float(rng.uniform(0.4, 0.9))
    height = ch * float(np.clip(scale * ident.height * rng.uniform(0.95, 1.05), 0.7, 0.96))
    baseline = ch * (1.0 - float(rng.uniform(0.012, 0.04)))
    cx = cw * (0.5 + float(rng.uniform(-0.07, 0.07)))
    hand = 1 if rng.random() < 0.5 else -1
    occ = None
    u = rng.random(6)
    if rng.random() < occlusion_prob:
        kind = ("barrier", "pole", "box")[int(u[0] * 3)]
        colour = tuple(int(v) for v in rng.integers(25, 200, 3))
        if kind == "barrier":
            y0 = ch * (0.6 + 0.2 * u[1])
            occ = (kind, -2.0, y0, cw + 2.0, ch + 2.0, colour)
        elif kind == "pole":
            w = cw * (0.1 + 0.1 * u[1])
            x0 = cx + (u[2] - 0.5) * cw * 0.5 - w / 2
            occ = (kind, x0, -2.0, x0 + w, ch + 2.0, colour)
        else:
            w, top = cw * (0.35 + 0.25 * u[1]), ch * (0.5 + 0.25 * u[2])
            x0 = -2.0 if u[3] < 0.5 else cw - w + 2.0
            occ = (kind, x0, top, x0 + w, ch + 2.0, colour)
    return Pose(view, phase, stride, arm_swing, height, cx, baseline, hand, occ)


@dataclass(frozen=True)
class Skeleton:
    """Joint positions of one pose, in canvas pixels (see :func:`skeleton`)."""

    top: float                                   # y of the crown (the figure stands on the baseline)
    legs: tuple[tuple[Point, Point, Point], ...]  # (hip, knee, ankle) per leg; the first is the near leg in side views
    arms: tuple[tuple[Point, Point, Point], ...]  # (shoulder, elbow, wrist) per arm; the first is the near arm
    shoulder: float                              # half the shoulder width, in statures


def skeleton(pose: Pose, girth: float) -> Skeleton:
    """The joints of ``pose`` for a body ``girth`` wide (the identity's build times :data:`WIDTH`).

    Vertical positions are fractions of the stature from the crown, horizontal ones
    fractions of the stature from the centre ``pose.cx``; the lowest sole touches the
    baseline.
    """
    p, h, g = pose, pose.height, girth
    side, f = pose.side, pose.facing
    top = p.baseline - h

    def x(u: float) -> float:
        return p.cx + u * h

    def y(t: float) -> float:  # reads ``top`` as it stands when called
        return top + t * h

    s = math.sin(p.phase)
    c = math.cos(p.phase)
    thigh, shin = 0.235 * h, 0.225 * h
    hip_t = 0.5
    legs = []
    for sign in (1.0, -1.0):  # sign +1: the near leg in side views
        theta = sign * p.stride * s
        if side:
            flex = 0.75 * p.stride / 0.35 * max(0.0, sign * c)
            hip = (x(0.0), y(hip_t))
            knee = (hip[0] + f * thigh * math.sin(theta), hip[1] + thigh * math.cos(theta))
            ankle = (knee[0] + f * shin * math.sin(theta - flex), knee[1] + shin * math.cos(theta - flex))
        else:
            off = sign * 0.048 * g * h
            fore = 0.03 * h * sign * s          # foot nearer the camera sits lower
            hip = (x(0.0) + off, y(hip_t))
            knee = (hip[0] + off * 0.08, hip[1] + thigh * 0.99 + fore * 0.5)
            ankle = (hip[0] + off * 0.12, hip[1] + (thigh + shin) * 0.985 + fore)
        legs.append((hip, knee, ankle))
    # Stand on the ground: the lowest sole touches the baseline.
    sole = max(a[1] for _, _, a in legs) + 0.055 * h
    dy = p.baseline - sole
    top += dy
    legs = [tuple((q[0], q[1] + dy) for q in leg) for leg in legs]
    sh_t = 0.175
    sw = (0.055 if side else 0.112) * g
    arms = []
    upper, fore = 0.165 * h, 0.16 * h
    for sign in (1.0, -1.0):
        shoulder = (x(0.0 if side else sign * (sw - 0.03 * g)), y(sh_t))
        if side:
            alpha = -sign * p.arm_swing * p.stride * s
            elbow = (shoulder[0] + f * upper * math.sin(alpha), shoulder[1] + upper * math.cos(alpha))
            beta = alpha + 0.2 + 0.4 * max(0.0, alpha)  # elbows bend forwards
            wrist = (elbow[0] + f * fore * math.sin(beta), elbow[1] + fore * math.cos(beta))
        else:
            spread = sign * 0.09
            swing = -sign * p.arm_swing * s * 0.5
            elbow = (shoulder[0] + upper * math.sin(spread), shoulder[1] + upper * math.cos(spread) * (1 - 0.05 * abs(swing)))
            wrist = (elbow[0] + fore * math.sin(spread * 0.6), elbow[1] + fore * (0.97 - 0.12 * swing))
        arms.append((shoulder, elbow, wrist))
    return Skeleton(top, tuple(legs), tuple(arms), sw)


class _Extent:
    """Running bounding box."""

    __slots__ = ("x0", "y0", "x1", "y1")

    def __init__(self) -> None:
        self.x0 = self.y0 = math.inf
        self.x1 = self.y1 = -math.inf

    def add(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.x0, self.y0 = min(self.x0, x0), min(self.y0, y0)
        self.x1, self.y1 = max(self.x1, x1), max(self.y1, y1)

    def point(self, p, r: float = 0.0) -> None:
        self.add(p[0] - r, p[1] - r, p[0] + r, p[1] + r)

    def box(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


class _Extents:
    """The running boxes of every part made (in part) by one piece; same calls as :class:`_Extent`."""

    __slots__ = ("targets",)

    def __init__(self, targets: list[_Extent]) -> None:
        self.targets = targets

    def add(self, x0: float, y0: float, x1: float, y1: float) -> None:
        for ext in self.targets:
            ext.add(x0, y0, x1, y1)

    def point(self, p, r: float = 0.0) -> None:
        for ext in self.targets:
            ext.point(p, r)


class PartBoxes:
    """The box of every part of one figure, grown by the drawn pieces as :data:`PART_PIECES` says."""

    def __init__(self) -> None:
        self._parts = {part: _Extent() for part in PART_NAMES}
        self._pieces = {q: _Extents([self._parts[p] for p, qs in PART_PIECES.items() if q in qs]) for q in PIECES}

    def piece(self, name: str) -> _Extents:
        """Where the drawn piece ``name`` reports its extent: ``.add(x0, y0, x1, y1)`` or ``.point(p, r)``."""
        return self._pieces[name]

    def boxes(self) -> dict[str, list[float]]:
        """``{part: [x0, y0, x1, y1]}`` in the order of :data:`muva.data.parts.PART_NAMES`."""
        return {k: e.box() for k, e in self._parts.items()}
